// Tunnel: the WebSocket pump after a 101, through ClientConnection and HttpSession as in
// production: a raw client sends a hand-written upgrade request, a raw backend answers 101, and
// both then speak hand-built frames.
#include "limpet/proxy/tunnel.hpp"

#include <gtest/gtest.h>

#include "harness.hpp"
#include "limpet/proxy/client_connection.hpp"

namespace limpet::proxy::testing {
namespace {

constexpr std::string_view kAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

std::string upgrade_request(std::string_view target) {
  return "GET " + std::string(target) +
         " HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

class TunnelTest : public ProxyTest {
 protected:
  // The backend answers a WebSocket upgrade with 101 and `backend_early` right behind it;
  // everything after that on its connection is tunnel bytes.
  void start_backend(std::string backend_early = "") {
    backend_ = &backend("a");
    backend_->respond = [this, backend_early](RawConn& c, const RawMessage& m) -> std::optional<std::string> {
      if (!m.header("upgrade")) return FakeBackend::ok("plain");
      backend_->set_raw(c);
      up_ = &c;
      return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: " + std::string(kAccept) + "\r\n\r\n" + backend_early;
    };
    build();
    listen();
  }

  // A client whose upgrade went through: its 101 is taken off its input.
  RawConn& open(std::string_view target = "/ws", std::string client_early = "", std::string backend_early = "") {
    start_backend(std::move(backend_early));
    RawConn& c = client();
    c.write(upgrade_request(target) + client_early);
    EXPECT_TRUE(run_until([&] { return read_message(c.in, true).has_value() || c.eof; }));
    auto m = read_message(c.in, true);
    EXPECT_TRUE(m.has_value());
    if (m) {
      EXPECT_EQ(m->status, 101);
      EXPECT_EQ(m->header("sec-websocket-accept"), std::string(kAccept));
      c.in.erase(0, m->size);
    }
    EXPECT_NE(up_, nullptr);
    return c;
  }

  static std::vector<WsFrame> frames(const RawConn& c) { return read_frames(c.in); }
  bool all_closed() { return open_count() == 0; }

  FakeBackend* backend_ = nullptr;
  RawConn* up_ = nullptr;  // the backend's side of the tunnel
};

TEST_F(TunnelTest, BytesFlowBothWaysAndEarlyBytesGoFirst) {
  const std::string client_early = ws_frame(1, "early from client", true);
  const std::string backend_early = ws_frame(1, "early from backend", false);
  RawConn& c = open("/ws", client_early, backend_early);
  // What came right after each head is forwarded before anything else.
  ASSERT_TRUE(run_until([&] { return c.in.size() >= backend_early.size(); }));
  EXPECT_EQ(c.in, backend_early);
  ASSERT_TRUE(run_until([&] { return up_->in.size() >= client_early.size(); }));
  EXPECT_EQ(up_->in, client_early);  // masked bytes untouched
  EXPECT_EQ(worker_.counters.tunnels_opened.load(), 1u);
  EXPECT_EQ(state(0).tunnels.load(), 1);
  EXPECT_EQ(state(0).in_flight.load(), 1);

  c.in.clear();
  up_->in.clear();
  const std::string to_backend = ws_frame(2, std::string(100000, 'c'), true);
  const std::string to_client = ws_frame(2, std::string(70000, 'b'), false);
  c.write(to_backend);
  up_->write(to_client);
  ASSERT_TRUE(run_until([&] { return up_->in.size() >= to_backend.size() && c.in.size() >= to_client.size(); }));
  EXPECT_EQ(up_->in, to_backend);
  EXPECT_EQ(c.in, to_client);
  EXPECT_EQ(worker_.counters.ws_messages_to_backend.load(), 2u);
  EXPECT_EQ(worker_.counters.ws_messages_to_client.load(), 2u);

  // The client goes: its FIN reaches the backend as a half-close, and once the backend closes
  // too the tunnel is over.
  c.close();
  ASSERT_TRUE(run_until([&] { return up_->eof || up_->read_error != 0; }));
  EXPECT_EQ(state(0).tunnels.load(), 1);
  up_->close();
  ASSERT_TRUE(run_until([&] { return all_closed(); }));
  EXPECT_EQ(state(0).tunnels.load(), 0);
  EXPECT_EQ(state(0).in_flight.load(), 0);
}

// Each half-close travels on, and the other direction keeps flowing until it closes too.
TEST_F(TunnelTest, HalfClosePropagatesBothWays) {
  RawConn& c = open();
  c.write(ws_frame(1, "last from client", true));
  c.shutdown();
  ASSERT_TRUE(run_until([&] { return up_->eof; }));
  EXPECT_EQ(read_frames(up_->in).size(), 1u);
  EXPECT_FALSE(c.eof);

  up_->write(ws_frame(1, "still talking", false));
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1; }));
  EXPECT_EQ(frames(c)[0].payload, "still talking");
  EXPECT_EQ(open_count(), 1u);

  up_->shutdown();
  ASSERT_TRUE(run_until([&] { return c.eof && all_closed(); }));
  EXPECT_EQ(state(0).tunnels.load(), 0);
  EXPECT_EQ(state(0).in_flight.load(), 0);
}

// A clean close (drain: 1012): a Close frame toward each side, at that side's next frame
// boundary — masked toward the backend, unmasked toward the client — and the connections close
// once both answered.
TEST_F(TunnelTest, CloseCleanlyInjectsCloseFramesAtFrameBoundaries) {
  RawConn& c = open();
  const std::string frame = ws_frame(2, std::string(1000, 'm'), true);
  const std::string first_half = frame.substr(0, 300);
  c.write(first_half);
  ASSERT_TRUE(run_until([&] { return up_->in.size() == first_half.size(); }));

  ClientConnection* conn = only_connection();
  ASSERT_NE(conn, nullptr);
  conn->close_tunnel_cleanly(Tunnel::kCloseServiceRestart, 0);

  // The client's direction is at a boundary: its Close goes now, unmasked.
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1; }));
  WsFrame to_client = frames(c)[0];
  EXPECT_EQ(to_client.opcode, 0x8);
  EXPECT_FALSE(to_client.masked);
  EXPECT_EQ(to_client.close_code(), 1012);
  EXPECT_EQ(to_client.payload.substr(2), "service restart");

  // The backend's direction is mid-frame: the frame goes on whole, then the Close, masked.
  c.write(frame.substr(300));
  ASSERT_TRUE(run_until([&] { return read_frames(up_->in).size() == 2; }));
  auto up_frames = read_frames(up_->in);
  EXPECT_EQ(up_->in.substr(0, frame.size()), frame);
  EXPECT_EQ(up_frames[1].opcode, 0x8);
  EXPECT_TRUE(up_frames[1].masked);
  EXPECT_EQ(up_frames[1].close_code(), 1012);
  EXPECT_EQ(open_count(), 1u);  // waiting for the answers

  // The answers: the client's Close (masked), then the backend's (unmasked). Neither is
  // forwarded: each side already has limpet's.
  c.write(ws_frame(0x8, std::string("\x03\xf4", 2), true));
  up_->write(ws_frame(0x8, std::string("\x03\xf4", 2), false));
  ASSERT_TRUE(run_until([&] { return all_closed() && c.eof && (up_->eof || up_->read_error != 0); }));
  EXPECT_EQ(frames(c).size(), 1u);
  EXPECT_EQ(read_frames(up_->in).size(), 2u);
  EXPECT_EQ(worker_.counters.tunnels_closed_cleanly.load(), 1u);
  EXPECT_EQ(state(0).tunnels.load(), 0);
  EXPECT_EQ(state(0).in_flight.load(), 0);
}

// A message over max_message_size: the sender gets Close 1009, so does the receiver, what came
// before the message went through, and nothing of it does.
TEST_F(TunnelTest, MessageOverMaxMessageSizeClosesWith1009) {
  ucfg_.max_message_size = 1000;
  RawConn& c = open();
  const std::string small = ws_frame(1, "fits", true);
  c.write(small);
  ASSERT_TRUE(run_until([&] { return up_->in.size() == small.size(); }));
  c.write(ws_frame(2, std::string(2000, 'X'), true));
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1 && read_frames(up_->in).size() == 2; }));
  WsFrame to_sender = frames(c)[0];
  EXPECT_EQ(to_sender.opcode, 0x8);
  EXPECT_FALSE(to_sender.masked);
  EXPECT_EQ(to_sender.close_code(), 1009);
  auto up_frames = read_frames(up_->in);
  EXPECT_EQ(up_frames[0].payload, "fits");
  EXPECT_EQ(up_frames[1].opcode, 0x8);
  EXPECT_TRUE(up_frames[1].masked);
  EXPECT_EQ(up_frames[1].close_code(), 1009);
  // Nothing of the too-big message reached the backend: only the two frames above, decoded (the
  // raw bytes hold the Close frame's random masking key, which may contain any byte).
  EXPECT_EQ(up_frames.size(), 2u);
  for (const auto& f : up_frames) EXPECT_EQ(f.payload.find('X'), std::string::npos);
  ASSERT_TRUE(run_until([&] { return all_closed() && c.eof && (up_->eof || up_->read_error != 0); }));
  EXPECT_EQ(worker_.counters.ws_messages_too_big.load(), 1u);
  EXPECT_EQ(state(0).tunnels.load(), 0);
}

// Fragments count together: a message whose fragments add up past the limit is too big.
TEST_F(TunnelTest, FragmentedMessageOverMaxMessageSizeToTheClientClosesWith1009) {
  ucfg_.max_message_size = 1000;
  RawConn& c = open();
  up_->write(ws_frame(2, std::string(600, 'a'), false, 0, false));
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1; }));
  up_->write(ws_frame(0, std::string(600, 'Z'), false, 0, true));
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 2 && read_frames(up_->in).size() == 1; }));
  // The receiver (the client) has the first fragment and a Close; the sender (the backend) a Close.
  EXPECT_EQ(frames(c)[1].opcode, 0x8);
  EXPECT_EQ(frames(c)[1].close_code(), 1009);
  EXPECT_EQ(read_frames(up_->in)[0].close_code(), 1009);
  EXPECT_TRUE(read_frames(up_->in)[0].masked);
  EXPECT_EQ(c.in.find('Z'), std::string::npos);
  ASSERT_TRUE(run_until([&] { return all_closed(); }));
}

TEST_F(TunnelTest, IdleTunnelIsClosed) {
  lcfg_.tunnel_idle_timeout = std::chrono::milliseconds(150);
  start_sweeper(20);
  RawConn& c = open();
  const uint64_t opened = now_ms();
  ASSERT_TRUE(run_until([&] { return all_closed() && c.eof && (up_->eof || up_->read_error != 0); }));
  EXPECT_GE(now_ms() - opened, 140u);  // not before the idle timeout (1 tick of slack)
  EXPECT_EQ(state(0).tunnels.load(), 0);
  EXPECT_EQ(state(0).in_flight.load(), 0);
}

// An Engine.IO session upgraded to WebSocket: while the tunnel lives it counts as a tunnel and in
// flight on its backend, and as one live session (not an entry plus a tunnel); when it closes
// the counts go back and the affinity entry is forgotten.
TEST_F(TunnelTest, CloseGivesTheCountsBackAndForgetsTheSession) {
  start_backend();
  affinity_->learn("sid-ws", state(0).id, ucfg_.session_ttl);
  ASSERT_EQ(affinity_->size(), 1u);
  RawConn& c = client();
  c.write(upgrade_request("/socket.io/?EIO=4&transport=websocket&sid=sid-ws"));
  ASSERT_TRUE(run_until([&] { return read_message(c.in, true).has_value(); }));
  EXPECT_EQ(read_message(c.in, true)->status, 101);
  EXPECT_EQ(state(0).tunnels.load(), 1);
  EXPECT_EQ(state(0).in_flight.load(), 1);
  EXPECT_EQ(affinity_->size(), 1u);
  EXPECT_EQ(state(0).own_sessions(), 1);

  up_->close();  // the backend goes, then the client: the tunnel ends
  ASSERT_TRUE(run_until([&] { return c.eof || c.read_error != 0; }));
  c.close();
  ASSERT_TRUE(run_until([&] { return all_closed(); }));
  EXPECT_EQ(state(0).tunnels.load(), 0);
  EXPECT_EQ(state(0).in_flight.load(), 0);
  EXPECT_EQ(state(0).upgraded_sessions.load(), 0);
  EXPECT_EQ(state(0).own_sessions(), 0);
  EXPECT_EQ(affinity_->size(), 0u);
  EXPECT_FALSE(affinity_->lookup("sid-ws", ucfg_.session_ttl).has_value());
}

// Shutdown (1001) closes a tunnel the same clean way.
TEST_F(TunnelTest, ShutdownClosesWithGoingAway) {
  RawConn& c = open();
  ClientConnection* conn = only_connection();
  ASSERT_NE(conn, nullptr);
  conn->begin_shutdown();
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1 && read_frames(up_->in).size() == 1; }));
  EXPECT_EQ(frames(c)[0].close_code(), 1001);
  EXPECT_EQ(read_frames(up_->in)[0].close_code(), 1001);
  c.write(ws_frame(0x8, std::string("\x03\xe9", 2), true));
  up_->write(ws_frame(0x8, std::string("\x03\xe9", 2), false));
  ASSERT_TRUE(run_until([&] { return all_closed(); }));
  EXPECT_EQ(worker_.counters.tunnels_closed_cleanly.load(), 1u);
}

// Nobody answers the Close frames: the connections close after the reply deadline anyway.
// (kCloseReplyMs is 3 s in tunnel.cpp; the wait allows for it.)
TEST_F(TunnelTest, UnansweredCloseStillClosesTheConnections) {
  RawConn& c = open();
  only_connection()->close_tunnel_cleanly(Tunnel::kCloseServiceRestart, 0);
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1 && read_frames(up_->in).size() == 1; }));
  ASSERT_TRUE(run_until([&] { return all_closed() && c.eof; }, 10000));
  EXPECT_EQ(worker_.counters.tunnels_closed_cleanly.load(), 0u);
  EXPECT_EQ(state(0).tunnels.load(), 0);
}

}  // namespace
}  // namespace limpet::proxy::testing

namespace limpet::proxy::testing {
namespace {

// Frames limpet will not forward (design: doc/security.md): the receiver would have to fail the
// connection (RFC 6455 §7.1.7), and what follows cannot be delimited. Each case: what came before
// goes on, both sides get a Close 1002, none of the bad frame's bytes reach the backend.
struct BadFrame {
  const char* name;
  std::string bytes;
};

class TunnelBadFrameTest : public TunnelTest, public ::testing::WithParamInterface<BadFrame> {};

TEST_P(TunnelBadFrameTest, ClosesWith1002AndForwardsNoneOfIt) {
  RawConn& c = open();
  const std::string good = ws_frame(1, "fine", true);
  c.write(good + GetParam().bytes);
  ASSERT_TRUE(run_until([&] { return frames(c).size() == 1 && read_frames(up_->in).size() == 2; }));
  EXPECT_EQ(frames(c)[0].close_code(), 1002);
  auto up_frames = read_frames(up_->in);
  EXPECT_EQ(up_frames[0].payload, "fine");
  EXPECT_EQ(up_frames[1].close_code(), 1002);
  EXPECT_TRUE(up_frames[1].masked);
  size_t consumed = 0;
  read_frames(up_->in, &consumed);
  EXPECT_EQ(consumed, up_->in.size());  // nothing after the Close
  ASSERT_TRUE(run_until([&] { return all_closed(); }));
  EXPECT_EQ(worker_.counters.ws_protocol_errors.load(), 1u);
}

std::string with_length_top_bit() {
  return std::string("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05", 10) + std::string("\x01\x02\x03\x04", 4) + "abcde";
}

INSTANTIATE_TEST_SUITE_P(
    Frames, TunnelBadFrameTest,
    ::testing::Values(BadFrame{"unmasked", ws_frame(1, "no mask", false)},
                      BadFrame{"reserved_data_opcode", ws_frame(3, "x", true)},
                      BadFrame{"reserved_control_opcode", ws_frame(0xB, "x", true)},
                      BadFrame{"length_top_bit", with_length_top_bit()},
                      BadFrame{"fragmented_ping", ws_frame(9, "p", true, 0x11223344, false)},
                      BadFrame{"orphan_continuation", ws_frame(0, "c", true)}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(TunnelTest, AFrameSplitByteByByteAndManyTinyFramesPassIntact) {
  RawConn& c = open();
  const std::string one = ws_frame(2, std::string(300, 'b'), true);
  for (char byte : one) c.write(std::string(1, byte));
  ASSERT_TRUE(run_until([&] { return up_->in.size() == one.size(); }));
  std::string tiny;
  for (int i = 0; i < 100000; ++i) tiny += ws_frame(1, "", true);
  c.write(tiny);
  ASSERT_TRUE(run_until([&] { return up_->in.size() == one.size() + tiny.size(); }, 10000));
  EXPECT_EQ(worker_.counters.ws_messages_to_backend.load(), 100001u);
  EXPECT_EQ(worker_.counters.ws_protocol_errors.load(), 0u);
}

}  // namespace
}  // namespace limpet::proxy::testing
