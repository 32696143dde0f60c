#include "limpet/net/stream.hpp"

#include <gtest/gtest.h>

#include <string>

#include "limpet/net/socket.hpp"
#include "limpet/util/buffer_pool.hpp"

namespace limpet::net {
namespace {

// A loopback pair on a real uv loop: one accepted stream, one connected stream.
struct Recorder : StreamDelegate {
  std::string received;
  int ends = 0;
  int writable = 0;
  int closed = 0;
  int timeouts = 0;
  void on_data(Stream*, std::string_view d) override { received.append(d); }
  void on_end(Stream*, int) override { ++ends; }
  void on_writable(Stream*) override { ++writable; }
  void on_closed(Stream*) override { ++closed; }
  void on_timeout(Stream*) override { ++timeouts; }
};

struct Loopback : ::testing::Test {
  uv_loop_t loop{};
  BufferPool pool;
  uv_tcp_t server{};
  Stream* accepted = nullptr;
  Stream* connected = nullptr;
  Recorder accepted_rec, connected_rec;

  void SetUp() override {
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &server);
    server.data = this;
    auto addr = resolve_numeric("127.0.0.1", 0);
    ASSERT_TRUE(addr);
    ASSERT_EQ(uv_tcp_bind(&server, addr->get(), 0), 0);
    ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&server), 8,
                        [](uv_stream_t* s, int) {
                          auto* self = static_cast<Loopback*>(s->data);
                          self->accepted = new Stream(&self->loop, &self->pool);
                          ASSERT_EQ(uv_accept(s, self->accepted->uv()), 0);
                          self->accepted->set_delegate(&self->accepted_rec);
                          self->accepted->accepted();
                          self->accepted->start_reading();
                        }),
              0);
    auto target = resolve_numeric("127.0.0.1", local_port(&server));
    connected = new Stream(&loop, &pool);
    connected->set_delegate(&connected_rec);
    int connect_status = 1;
    ASSERT_EQ(connected->connect(target->get(), [&](int st) { connect_status = st; }), 0);
    run_until([&] { return connect_status != 1 && accepted != nullptr; });
    ASSERT_EQ(connect_status, 0);
  }

  template <typename Pred>
  void run_until(Pred done) {
    for (int i = 0; i < 100000 && !done(); ++i) uv_run(&loop, UV_RUN_ONCE);
    ASSERT_TRUE(done());
  }

  void TearDown() override {
    if (accepted && !accepted->closing()) accepted->close();
    if (connected && !connected->closing()) connected->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    // Every handle was closed: the loop closes cleanly and no read buffer is still borrowed.
    EXPECT_EQ(uv_loop_close(&loop), 0);
    EXPECT_EQ(pool.outstanding(), 0u);
  }
};

TEST_F(Loopback, WritesArriveInOrderAndIdleStreamsHoldNoBuffer) {
  std::string big(3 * 1024 * 1024, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  connected->write("head:");
  connected->write(big);
  connected->write(":tail");
  run_until([&] { return accepted_rec.received.size() == big.size() + 10; });
  EXPECT_EQ(accepted_rec.received, "head:" + big + ":tail");
  EXPECT_TRUE(connected->out().drained());
  EXPECT_EQ(pool.outstanding(), 0u);
}

TEST_F(Loopback, HighWaterIsReportedAndClearsWhenDrained) {
  accepted->stop_reading();  // the peer stops reading: our queue must grow
  std::string chunk(1024 * 1024, 'y');
  for (int i = 0; i < 16 && !connected->out().above_high_water(); ++i) connected->write(chunk);
  EXPECT_TRUE(connected->out().above_high_water());
  accepted->start_reading();
  run_until([&] { return connected->out().drained(); });
  EXPECT_GE(connected_rec.writable, 1);
}

TEST_F(Loopback, HalfCloseAfterQueuedWrites) {
  connected->write("last words");
  connected->shutdown_after_writes();
  run_until([&] { return accepted_rec.ends == 1; });
  EXPECT_EQ(accepted_rec.received, "last words");
}

TEST_F(Loopback, TimerFiresOnce) {
  connected->set_timeout(5);
  run_until([&] { return connected_rec.timeouts == 1; });
}

// Moving the deadline later touches no timer: the old arming wakes up, finds the new deadline
// ahead and sleeps again; it fires once, at the new deadline.
TEST_F(Loopback, TimeoutMovedLaterFiresOnceAtTheNewDeadline) {
  uv_update_time(&loop);
  const uint64_t start = uv_now(&loop);
  connected->set_timeout(5);
  connected->set_timeout(40);
  run_until([&] { return connected_rec.timeouts == 1; });
  EXPECT_GE(uv_now(&loop) - start, 40u);
  connected->set_timeout(5);
  connected->set_timeout(1);  // earlier: re-armed
  run_until([&] { return connected_rec.timeouts == 2; });
}

TEST_F(Loopback, ClearedTimeoutNeverFires) {
  connected->set_timeout(2);
  connected->clear_timeout();
  accepted->set_timeout(20);
  run_until([&] { return accepted_rec.timeouts == 1; });
  EXPECT_EQ(connected_rec.timeouts, 0);
}

// Several pieces leave in order, the way a response head and its first body bytes do.
TEST_F(Loopback, GatheredWriteKeepsOrder) {
  std::string body(200 * 1024, 'b');
  std::string_view parts[] = {"HTTP/1.1 200 OK\r\n\r\n", "", "5\r\n", body};
  connected->write(parts);
  const size_t total = 19 + 3 + body.size();
  run_until([&] { return accepted_rec.received.size() == total; });
  EXPECT_EQ(accepted_rec.received, "HTTP/1.1 200 OK\r\n\r\n5\r\n" + body);
}

TEST_F(Loopback, CloseTellsTheDelegate) {
  connected->close();
  run_until([&] { return connected_rec.closed == 1; });
  connected = nullptr;
}

TEST(OutQueue, QueuesUntilAttachedAndHandsOverOnFailure) {
  OutQueue q;
  q.write("GET / HTTP/1.1\r\n\r\n");
  q.write("body");
  EXPECT_EQ(q.pending(), 22u);
  EXPECT_EQ(q.bytes_sent(), 0u);
  auto taken = q.take_queued();
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[1], "body");
  EXPECT_TRUE(q.drained());
}

}  // namespace
}  // namespace limpet::net
