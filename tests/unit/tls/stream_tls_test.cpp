// TLS filters on real net::Streams over loopback: what the proxy sees is plaintext, backpressure
// counts ciphertext, a failed connect gives back the plaintext queued for a retry, a failed
// handshake ends the stream, and every handle and pooled buffer comes back.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "limpet/net/socket.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/tls/context.hpp"
#include "limpet/util/buffer_pool.hpp"
#include "test_pki.hpp"

namespace limpet::tls {
namespace {

struct Recorder : net::StreamDelegate {
  std::string received;
  int ends = 0;
  int last_status = 0;
  void on_data(net::Stream*, std::string_view d) override { received.append(d); }
  void on_end(net::Stream*, int status) override {
    ++ends;
    last_status = status;
  }
  void on_writable(net::Stream*) override {}
  void on_closed(net::Stream*) override {}
  void on_timeout(net::Stream*) override {}
};

class StreamTls : public ::testing::Test {
 protected:
  void SetUp() override {
    config::ListenerTls l;
    l.enabled = true;
    l.certificate = pki_.issue("server", testing::for_names({"server.test"}, {"127.0.0.1"}));
    auto server = ServerContext::build(l);
    ASSERT_TRUE(server) << server.message();
    server_ = *server;
    config::UpstreamTls up;
    up.enabled = true;
    up.ca_file = pki_.ca_file();
    auto client = ClientContext::build(up, "app");
    ASSERT_TRUE(client) << client.message();
    client_ = *client;

    uv_loop_init(&loop_);
    uv_tcp_init(&loop_, &listener_);
    listener_.data = this;
    auto addr = net::resolve_numeric("127.0.0.1", 0);
    ASSERT_EQ(uv_tcp_bind(&listener_, addr->get(), 0), 0);
    ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 8,
                        [](uv_stream_t* s, int) {
                          auto* self = static_cast<StreamTls*>(s->data);
                          self->accepted_ = new net::Stream(&self->loop_, &self->pool_);
                          ASSERT_EQ(uv_accept(s, self->accepted_->uv()), 0);
                          self->accepted_->set_filter(self->server_->new_filter(&self->server_counters_, "127.0.0.1"));
                          self->accepted_->set_delegate(&self->accepted_rec_);
                          self->accepted_->accepted();
                          self->accepted_->start_reading();
                        }),
              0);
    backend_.name = "b1";
    backend_.address.text = "127.0.0.1:" + std::to_string(net::local_port(&listener_));
  }

  void TearDown() override {
    if (accepted_ != nullptr && !accepted_->closing()) accepted_->close();
    if (connected_ != nullptr && !connected_->closing()) connected_->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    EXPECT_EQ(pool_.outstanding(), 0u);
  }

  template <typename Pred>
  void run_until(Pred done) {
    for (int i = 0; i < 100000 && !done(); ++i) uv_run(&loop_, UV_RUN_ONCE);
    ASSERT_TRUE(done());
  }

  // A client stream with limpet's upstream filter, connecting to `port`; `early` is written before
  // the connect completes.
  int connect(uint16_t port, const std::string& early) {
    connected_ = new net::Stream(&loop_, &pool_);
    connected_->set_filter(client_->new_filter(backend_, &client_counters_));
    connected_->set_delegate(&connected_rec_);
    connected_->write(early);
    auto target = net::resolve_numeric("127.0.0.1", port);
    int status = 1;
    EXPECT_EQ(connected_->connect(target->get(), [&](int st) {
      status = st;
      if (st == 0) connected_->start_reading();
    }), 0);
    run_until([&] { return status != 1; });
    return status;
  }

  testing::Pki pki_;
  std::shared_ptr<const ServerContext> server_;
  std::shared_ptr<const ClientContext> client_;
  config::BackendConfig backend_;
  uv_loop_t loop_{};
  uv_tcp_t listener_{};
  BufferPool pool_;
  net::Stream* accepted_ = nullptr;
  net::Stream* connected_ = nullptr;
  Recorder accepted_rec_;
  Recorder connected_rec_;
  Counters server_counters_;
  Counters client_counters_;
};

TEST_F(StreamTls, PlaintextBothWaysAndHalfClose) {
  ASSERT_EQ(connect(net::local_port(&listener_), "GET / HTTP/1.1\r\n\r\n"), 0);
  run_until([&] { return accepted_rec_.received.size() == 18; });
  EXPECT_EQ(accepted_rec_.received, "GET / HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(accepted_->filtered());

  // The reader stalls: the writer's queue of ciphertext grows past the high-water mark, as it
  // does for plaintext, so a tunnel stops reading its other side.
  connected_->stop_reading();
  std::string chunk(1024 * 1024, 'x');
  std::string big;
  for (int i = 0; i < 32 && !accepted_->out().above_high_water(); ++i) {
    for (size_t j = 0; j < chunk.size(); j += 1000) chunk[j] = static_cast<char>('a' + i);
    accepted_->write(chunk);
    big += chunk;
  }
  EXPECT_TRUE(accepted_->out().above_high_water());
  connected_->start_reading();
  run_until([&] { return connected_rec_.received.size() == big.size(); });
  EXPECT_TRUE(connected_rec_.received == big);

  connected_->write("bye");
  connected_->shutdown_after_writes();  // close_notify, then FIN
  run_until([&] { return accepted_rec_.ends == 1; });
  EXPECT_EQ(accepted_rec_.received, "GET / HTTP/1.1\r\n\r\nbye");
  EXPECT_EQ(accepted_rec_.last_status, UV_EOF);
  EXPECT_EQ(server_counters_.handshakes, 1u);
  EXPECT_EQ(client_counters_.handshakes, 1u);
}

// A peer that sends close_notify and then waits for ours before it sends its FIN (Python's
// asyncio does): the stream ends at the close_notify.
TEST_F(StreamTls, CloseNotifyWithoutFinEndsTheStream) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  auto target = net::resolve_numeric("127.0.0.1", net::local_port(&listener_));
  ASSERT_EQ(::connect(fd, target->get(), target->length), 0);
  ASSERT_EQ(::fcntl(fd, F_SETFL, O_NONBLOCK), 0);
  auto peer = client_->new_filter(backend_, &client_counters_);
  std::string wire;
  std::string plain;
  const auto flush = [&] {
    if (!wire.empty()) {
      ASSERT_EQ(::send(fd, wire.data(), wire.size(), 0), static_cast<ssize_t>(wire.size()));
    }
    wire.clear();
  };
  const auto receive = [&] {
    char buf[16384];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      EXPECT_TRUE(peer->on_wire(std::string_view(buf, static_cast<size_t>(n)), &plain, &wire));
    }
    flush();
    return peer->handshake_complete();
  };
  ASSERT_TRUE(peer->start(&wire));
  ASSERT_TRUE(peer->on_plain("hello", &wire));
  flush();
  run_until([&] { return receive() && accepted_rec_.received == "hello"; });
  peer->on_shutdown(&wire);  // close_notify, and the socket stays open
  flush();
  run_until([&] { return accepted_rec_.ends == 1; });
  EXPECT_EQ(accepted_rec_.last_status, UV_EOF);
  accepted_->write("still heard");  // half-closed: our direction goes on
  run_until([&] {
    receive();
    return plain == "still heard";
  });
  ::close(fd);
}

TEST_F(StreamTls, FailedConnectGivesBackThePlaintext) {
  uv_tcp_t closed;
  uv_tcp_init(&loop_, &closed);
  auto any = net::resolve_numeric("127.0.0.1", 0);
  ASSERT_EQ(uv_tcp_bind(&closed, any->get(), 0), 0);
  const uint16_t port = net::local_port(&closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&closed), nullptr);  // bound, never listening: refused
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(connect(port, "POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"), UV_ECONNREFUSED);
  std::string queued;
  for (const auto& chunk : connected_->out().take_queued()) queued += chunk;
  EXPECT_EQ(queued, "POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody") << "plaintext, ready for another backend";
}

TEST_F(StreamTls, FailedVerificationEndsTheStream) {
  backend_.address.text = "127.0.0.2:1";  // the certificate names 127.0.0.1 only
  ASSERT_EQ(connect(net::local_port(&listener_), "GET / HTTP/1.1\r\n\r\n"), 0);
  run_until([&] { return connected_rec_.ends == 1; });
  EXPECT_EQ(connected_rec_.last_status, UV_EPROTO);
  EXPECT_EQ(client_counters_.failures, 1u);
  EXPECT_EQ(accepted_rec_.received, "") << "nothing was sent unverified";
}

}  // namespace
}  // namespace limpet::tls
