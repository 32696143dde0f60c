// The TLS filter in memory: limpet's server and client sides against each other and against
// clients and servers built directly on OpenSSL (what browsers, curl and backends look like).
#include "limpet/tls/filter.hpp"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <cstring>
#include <random>
#include <string>

#include "limpet/tls/context.hpp"
#include "link.hpp"
#include "test_pki.hpp"

namespace limpet::tls {
namespace {

using testing::Link;
using testing::Pki;
using testing::raw_filter;

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n));
  return out;
}

class FilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::LeafOptions o;
    o.dns = {"www.example.com"};
    o.ips = {"127.0.0.1"};
    listener_.certificate = pki_.issue("www", o);
    listener_.where = "t.toml:1:1";
  }

  std::shared_ptr<const ServerContext> server_context() {
    auto built = ServerContext::build(listener_);
    EXPECT_TRUE(built) << built.message();
    return built ? *built : nullptr;
  }

  // limpet on both sides: its server, its upstream client verifying against the test CA.
  void limpet_pair(Link& link, const std::string& server_name = "www.example.com") {
    server_ = server_context();
    config::UpstreamTls up;
    up.enabled = true;
    up.ca_file = pki_.ca_file();
    up.server_name = server_name;
    auto client = ClientContext::build(up, "app");
    ASSERT_TRUE(client) << client.message();
    client_ = *client;
    link.server.filter = server_->new_filter(&link.server.counters, "127.0.0.1");
    link.client.filter = client_->new_filter(backend_, &link.client.counters);
  }

  // A client built on OpenSSL directly, trusting the test CA.
  CtxPtr outsider_ctx() { return CtxPtr(pki_.new_client_ctx()); }

  Pki pki_;
  config::ListenerTls listener_;
  config::BackendConfig backend_{"b1", {"127.0.0.1", 8443, "127.0.0.1:8443"}, 1, "", 0};
  std::shared_ptr<const ServerContext> server_;
  std::shared_ptr<const ClientContext> client_;
};

TEST_F(FilterTest, HandshakeThenDataBothWays) {
  Link link;
  limpet_pair(link);
  link.start();
  ASSERT_TRUE(link.client.ok && link.server.ok);
  EXPECT_FALSE(link.client.wire_out.empty()) << "the client speaks first";
  EXPECT_TRUE(link.server.wire_out.empty());
  // Written before the handshake completes: held, then sent encrypted.
  link.send(link.client, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(link.client.filter->held_bytes(), 18u);
  link.pump();
  ASSERT_TRUE(link.handshaken());
  EXPECT_EQ(link.client.filter->held_bytes(), 0u);
  EXPECT_EQ(link.server.received, "GET / HTTP/1.1\r\n\r\n");
  link.send(link.server, "HTTP/1.1 200 OK\r\n\r\n");
  link.pump();
  EXPECT_EQ(link.client.received, "HTTP/1.1 200 OK\r\n\r\n");
  EXPECT_EQ(link.server.filter->version(), "TLSv1.3");
  EXPECT_EQ(link.server.filter->alpn(), "http/1.1");
  EXPECT_EQ(link.client.filter->alpn(), "http/1.1");
  EXPECT_EQ(link.server.filter->server_name(), "www.example.com");
  EXPECT_EQ(link.server.counters.handshakes, 1u);
  EXPECT_EQ(link.client.counters.handshakes, 1u);
  EXPECT_EQ(link.server.counters.failures, 0u);
}

TEST_F(FilterTest, OneByteAtATime) {
  Link link;
  limpet_pair(link);
  link.start();
  link.send(link.client, "ping");
  link.pump(1);
  ASSERT_TRUE(link.handshaken());
  EXPECT_EQ(link.server.received, "ping");
  EXPECT_GT(link.server.calls, 200u);
}

TEST_F(FilterTest, LargeDataBothWaysInOddPieces) {
  Link link;
  limpet_pair(link);
  link.start();
  link.pump();
  ASSERT_TRUE(link.handshaken());
  const std::string up = random_bytes(3 << 20);
  const std::string down = random_bytes(5 << 20);
  std::mt19937 rng(7);
  for (size_t at = 0; at < std::max(up.size(), down.size());) {
    const size_t n = 1 + rng() % 70000;
    if (at < up.size()) link.send(link.client, up.substr(at, n));
    if (at < down.size()) link.send(link.server, down.substr(at, n));
    link.pump(1 + rng() % 65536);
    at += n;
  }
  ASSERT_TRUE(link.client.ok && link.server.ok);
  EXPECT_TRUE(link.server.received == up) << link.server.received.size();
  EXPECT_TRUE(link.client.received == down) << link.client.received.size();
}

TEST_F(FilterTest, ShutdownSendsCloseNotifyAndTheOtherDirectionGoesOn) {
  Link link;
  limpet_pair(link);
  std::string nothing;
  link.start();
  link.client.filter->on_shutdown(&nothing);  // before the handshake: nothing to say
  EXPECT_TRUE(nothing.empty());
  link.pump();
  link.client.filter->on_shutdown(&link.client.wire_out);
  EXPECT_FALSE(link.client.wire_out.empty());
  const size_t once = link.client.wire_out.size();
  link.client.filter->on_shutdown(&link.client.wire_out);
  EXPECT_EQ(link.client.wire_out.size(), once);
  link.pump();
  EXPECT_TRUE(link.server.ok);
  EXPECT_TRUE(link.server.filter->peer_closed());
  link.send(link.server, "last words");  // a half-closed client still reads
  link.pump();
  EXPECT_EQ(link.client.received, "last words");
}

TEST_F(FilterTest, Tls12WithServerCipherPreference) {
  CtxPtr ctx = outsider_ctx();
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  // The client prefers AES-256; limpet's list puts AES-128 first and the server's order wins.
  SSL_CTX_set_cipher_list(ctx.get(), "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256");
  Link link;
  server_ = server_context();
  SSL* ssl = nullptr;
  link.client.filter = raw_filter(ctx.get(), Filter::Role::kClient, &link.client.counters, &ssl);
  link.server.filter = server_->new_filter(&link.server.counters, "127.0.0.1");
  link.start();
  link.pump();
  ASSERT_TRUE(link.handshaken());
  EXPECT_EQ(link.server.filter->version(), "TLSv1.2");
  EXPECT_STREQ(SSL_get_cipher_name(ssl), "ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_EQ(link.server.filter->alpn(), "");  // no ALPN offered: fine
}

TEST_F(FilterTest, OldVersionsAreRefused) {
  for (int version : {TLS1_VERSION, TLS1_1_VERSION}) {
    CtxPtr ctx = outsider_ctx();
    // Make sure the client really offers the old version (Debian's defaults would not).
    SSL_CTX_set_security_level(ctx.get(), 0);
    SSL_CTX_set_cipher_list(ctx.get(), "DEFAULT@SECLEVEL=0");
    SSL_CTX_set_min_proto_version(ctx.get(), version);
    SSL_CTX_set_max_proto_version(ctx.get(), version);
    Link link;
    server_ = server_context();
    link.client.filter = raw_filter(ctx.get(), Filter::Role::kClient, &link.client.counters);
    link.server.filter = server_->new_filter(&link.server.counters, "127.0.0.1");
    link.start();
    ASSERT_TRUE(link.client.ok) << "the client could not offer version " << version;
    link.pump();
    EXPECT_FALSE(link.server.ok);
    EXPECT_FALSE(link.client.ok) << "the client got the protocol_version alert";
    EXPECT_EQ(link.server.counters.failures, 1u);
    EXPECT_EQ(link.server.counters.handshakes, 0u);
  }
}

TEST_F(FilterTest, MinVersion13RefusesTls12) {
  listener_.min_version = config::TlsVersion::kTls13;
  CtxPtr ctx = outsider_ctx();
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  Link link;
  server_ = server_context();
  link.client.filter = raw_filter(ctx.get(), Filter::Role::kClient, &link.client.counters);
  link.server.filter = server_->new_filter(&link.server.counters, "127.0.0.1");
  link.start();
  link.pump();
  EXPECT_FALSE(link.server.ok);
  EXPECT_EQ(link.server.counters.failures, 1u);
}

TEST_F(FilterTest, AlpnH2OnlyIsRefusedH2AndHttp11GetsHttp11) {
  const auto handshake = [&](std::initializer_list<std::string> protocols, Link& link) {
    CtxPtr ctx = outsider_ctx();
    std::string wire;
    for (const auto& p : protocols) wire += static_cast<char>(p.size()) + p;
    SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    server_ = server_context();
    link.client.filter = raw_filter(ctx.get(), Filter::Role::kClient, &link.client.counters);
    link.server.filter = server_->new_filter(&link.server.counters, "127.0.0.1");
    link.start();
    link.pump();
  };
  Link h2;
  handshake({"h2"}, h2);
  EXPECT_FALSE(h2.server.ok);
  EXPECT_FALSE(h2.client.ok) << "no_application_protocol alert";
  EXPECT_EQ(h2.server.counters.failures, 1u);

  Link both;
  handshake({"h2", "http/1.1"}, both);
  ASSERT_TRUE(both.handshaken());
  EXPECT_EQ(both.server.filter->alpn(), "http/1.1");
  EXPECT_EQ(both.client.filter->alpn(), "http/1.1");
}

TEST_F(FilterTest, PlainHttpIsAnswered400AndCounted) {
  server_ = server_context();
  testing::Side side;
  side.filter = server_->new_filter(&side.counters, "127.0.0.1");
  ASSERT_TRUE(side.filter->start(&side.wire_out));
  std::string plain;
  EXPECT_FALSE(side.filter->on_wire("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &plain, &side.wire_out));
  EXPECT_TRUE(plain.empty());
  EXPECT_EQ(side.wire_out.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << side.wire_out;
  EXPECT_NE(side.wire_out.find("use https://"), std::string::npos);
  EXPECT_EQ(side.counters.plaintext, 1u);
  EXPECT_EQ(side.counters.failures, 1u);
  // Failed for good: later bytes are refused without another answer.
  side.wire_out.clear();
  EXPECT_FALSE(side.filter->on_wire("more", &plain, &side.wire_out));
  EXPECT_TRUE(side.wire_out.empty());
  EXPECT_FALSE(side.filter->on_plain("x", &side.wire_out));
}

TEST_F(FilterTest, GarbageIsRefused) {
  server_ = server_context();
  for (const std::string& garbage : {std::string("\x16\x03\x01\x00\x05hello", 10), random_bytes(300),
                                     std::string("SSH-2.0-OpenSSH_9.2\r\n")}) {
    testing::Side side;
    side.filter = server_->new_filter(&side.counters, "127.0.0.1");
    ASSERT_TRUE(side.filter->start(&side.wire_out));
    std::string plain;
    EXPECT_FALSE(side.filter->on_wire(garbage, &plain, &side.wire_out));
    EXPECT_TRUE(plain.empty());
    EXPECT_EQ(side.counters.failures, 1u);
    EXPECT_EQ(side.counters.plaintext, 0u);
  }
  EXPECT_EQ(ERR_peek_error(), 0u) << "the error queue is left empty for the next connection";
}

TEST_F(FilterTest, CorruptRecordAfterTheHandshakeFails) {
  Link link;
  limpet_pair(link);
  link.start();
  link.pump();
  link.send(link.client, "hello");
  link.client.wire_out[link.client.wire_out.size() - 3] ^= 0x40;
  link.pump();
  EXPECT_FALSE(link.server.ok);
  EXPECT_EQ(link.server.received, "");
  EXPECT_EQ(link.server.counters.failures, 0u) << "not a handshake failure";
}

TEST_F(FilterTest, AbandonedHandshakeIsCountedProbeIsNot) {
  server_ = server_context();
  Counters counters;
  {
    auto probe = server_->new_filter(&counters, "127.0.0.1");
    std::string out;
    ASSERT_TRUE(probe->start(&out));
  }
  EXPECT_EQ(counters.incomplete, 0u);
  {
    Link link;
    limpet_pair(link);
    link.start();
    auto stalled = server_->new_filter(&counters, "127.0.0.1");
    std::string out;
    std::string plain;
    ASSERT_TRUE(stalled->start(&out));
    ASSERT_TRUE(stalled->on_wire(std::string_view(link.client.wire_out).substr(0, 20), &plain, &out));
  }
  EXPECT_EQ(counters.incomplete, 1u);
}

TEST_F(FilterTest, NullSslFailsAtStart) {
  Counters counters;
  Filter filter(nullptr, Filter::Role::kServer, nullptr, &counters, "nobody");
  std::string out;
  EXPECT_FALSE(filter.start(&out));
  std::string plain;
  EXPECT_FALSE(filter.on_wire("x", &plain, &out));
}

// ---- session resumption ------------------------------------------------------------------------

struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using SessionPtr = std::unique_ptr<SSL_SESSION, SessionFree>;

class ResumptionTest : public FilterTest {
 protected:
  // One handshake with an outsider client, offering `session` if any; returns the session the
  // client holds afterwards.
  SessionPtr handshake(const ServerContext& server, SSL_SESSION* session, bool* resumed) {
    Link link;
    SSL* ssl = nullptr;
    link.client.filter = raw_filter(client_ctx_.get(), Filter::Role::kClient, &link.client.counters, &ssl);
    if (session != nullptr) SSL_set_session(ssl, session);
    link.server.filter = server.new_filter(&link.server.counters, "127.0.0.1");
    link.start();
    link.send(link.client, "x");  // the server's tickets arrive after its Finished: read them
    link.pump();
    link.send(link.server, "y");
    link.pump();
    EXPECT_TRUE(link.handshaken());
    *resumed = link.server.filter->resumed();
    EXPECT_EQ(link.server.counters.resumed.load(), *resumed ? 1u : 0u);
    return SessionPtr(SSL_get1_session(ssl));
  }

  CtxPtr client_ctx_ = outsider_ctx();
};

// Tickets go out with the server's last handshake flight, not later with the response: a client
// that reads one response and closes (wrk with "Connection: close") must have them by then.
TEST_F(ResumptionTest, TicketsArriveBeforeAnyApplicationData) {
  Link link;
  SSL* ssl = nullptr;
  link.client.filter = raw_filter(client_ctx_.get(), Filter::Role::kClient, &link.client.counters, &ssl);
  auto server = server_context();
  link.server.filter = server->new_filter(&link.server.counters, "127.0.0.1");
  link.start();
  link.pump();
  ASSERT_TRUE(link.handshaken());
  EXPECT_EQ(SSL_SESSION_has_ticket(SSL_get0_session(ssl)), 1);
}

TEST_F(ResumptionTest, Tls13ResumptionBringsANewTicket) {
  auto server = server_context();
  bool resumed = false;
  SessionPtr first = handshake(*server, nullptr, &resumed);
  SessionPtr second = handshake(*server, first.get(), &resumed);
  ASSERT_TRUE(resumed);
  const unsigned char* a = nullptr;
  const unsigned char* b = nullptr;
  size_t a_size = 0;
  size_t b_size = 0;
  SSL_SESSION_get0_ticket(first.get(), &a, &a_size);
  SSL_SESSION_get0_ticket(second.get(), &b, &b_size);
  ASSERT_GT(b_size, 0u);
  EXPECT_FALSE(a_size == b_size && std::memcmp(a, b, a_size) == 0) << "the resumed session kept the used ticket";
  handshake(*server, second.get(), &resumed);
  EXPECT_TRUE(resumed);
}

TEST_F(ResumptionTest, TicketsResumeAcrossContextsOfAReload) {
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SSL_CTX_set_max_proto_version(client_ctx_.get(), version);
    bool resumed = true;
    SessionPtr session = handshake(*server_context(), nullptr, &resumed);
    EXPECT_FALSE(resumed);
    // A reload builds new contexts; the ticket keys are the process's, so the ticket still works.
    handshake(*server_context(), session.get(), &resumed);
    EXPECT_TRUE(resumed) << version;
  }
}

TEST_F(ResumptionTest, TicketKeysRotate) {
  uint64_t now = 1'700'000'000;
  TicketKeys keys([&] { return now; });
  auto built = ServerContext::build(listener_, keys);
  ASSERT_TRUE(built) << built.message();
  bool resumed = false;
  SessionPtr first = handshake(**built, nullptr, &resumed);
  now += TicketKeys::kPeriodSeconds;  // the previous period's key still decrypts (and renews)
  handshake(**built, first.get(), &resumed);
  EXPECT_TRUE(resumed);
  now += TicketKeys::kPeriodSeconds;  // two periods on: that key is gone
  handshake(**built, first.get(), &resumed);
  EXPECT_FALSE(resumed);
  // A ticket from another process's (or a forged) key is just a full handshake.
  TicketKeys other([&] { return now; });
  auto elsewhere = ServerContext::build(listener_, other);
  ASSERT_TRUE(elsewhere);
  SessionPtr foreign = handshake(**elsewhere, nullptr, &resumed);
  handshake(**built, foreign.get(), &resumed);
  EXPECT_FALSE(resumed);
}

TEST_F(ResumptionTest, SessionCacheWhenTicketsAreOff) {
  listener_.session_tickets = false;
  auto server = server_context();
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SSL_CTX_set_max_proto_version(client_ctx_.get(), version);
    bool resumed = true;
    SessionPtr session = handshake(*server, nullptr, &resumed);
    EXPECT_FALSE(resumed);
    handshake(*server, session.get(), &resumed);
    EXPECT_TRUE(resumed) << version;
  }
}

}  // namespace
}  // namespace limpet::tls
