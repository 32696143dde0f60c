#include "limpet/net/stream.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "limpet/net/fd_budget.hpp"
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

// Every socket a Stream holds counts in the fd budget from its accept or connect to its close.
TEST_F(Loopback, SocketsCountInTheFdBudgetUntilClosed) {
  FdBudget& budget = fd_budget();
  const int64_t before = budget.in_use();  // this fixture's two
  EXPECT_GE(before, 2);
  connected->close();
  EXPECT_EQ(budget.in_use(), before - 1);
  accepted->close();
  EXPECT_EQ(budget.in_use(), before - 2);
}

// Room means a client and its backend connection both fit; the incident flags log once.
TEST(FdBudget, RoomForAClientAndItsBackendConnection) {
  FdBudget budget;
  EXPECT_TRUE(budget.room_for_client());  // unconfigured: no limit
  budget.configure(200, 100);             // 100 for client connections
  for (int i = 0; i < 98; ++i) budget.opened();
  EXPECT_TRUE(budget.room_for_client());
  budget.reserve();  // an admitted client that has not connected to its backend yet
  EXPECT_FALSE(budget.room_for_client());
  budget.unreserve();
  budget.opened();
  EXPECT_FALSE(budget.room_for_client());
  EXPECT_TRUE(budget.note_full());
  EXPECT_FALSE(budget.note_full());  // the same incident
  EXPECT_EQ(budget.incidents(), 1u);
  budget.closed();
  EXPECT_TRUE(budget.room_for_client());
  EXPECT_FALSE(budget.note_room());  // room for one: not yet the end of the incident
  for (int i = 0; i < 8; ++i) budget.closed();
  EXPECT_TRUE(budget.note_room());   // a tenth below the limit
  EXPECT_FALSE(budget.note_room());
  budget.configure(50, 100);  // a reserve above the limit leaves nothing
  EXPECT_EQ(budget.capacity(), 0);
  EXPECT_FALSE(budget.room_for_client());
}

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

// A stand-in for TLS: every byte XOR 1 on the wire.
struct XorFilter : StreamFilter {
  static std::string flip(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(c ^ 1);
    return out;
  }
  bool start(std::string*) override { return true; }
  bool on_wire(std::string_view wire, std::string* plain, std::string*) override {
    plain->append(flip(wire));
    return true;
  }
  bool on_plain(std::string_view plain, std::string* wire) override {
    wire->append(flip(plain));
    return true;
  }
  void on_shutdown(std::string*) override {}
  bool handshake_complete() const override { return true; }
  bool peer_closed() const override { return false; }
};

// Consumes a preamble of `length` bytes in the clear, then filters the rest (a PROXY header
// before a TLS ClientHello).
struct PreambleThenFilter : Recorder {
  size_t length = 0;
  std::string preamble;
  void on_data(Stream* s, std::string_view d) override {
    if (preamble.size() < length) {
      const size_t take = std::min(d.size(), length - preamble.size());
      preamble.append(d.substr(0, take));
      if (preamble.size() == length) s->attach_filter(std::make_unique<XorFilter>(), d.substr(take));
      return;
    }
    Recorder::on_data(s, d);
  }
};

TEST_F(Loopback, FilterAttachedAfterAPreambleGetsTheRestOfTheRead) {
  PreambleThenFilter reader;
  reader.length = 3;
  accepted->set_delegate(&reader);
  connected->write("HDR" + XorFilter::flip("hello"));  // one read: preamble and filtered bytes
  run_until([&] { return reader.received == "hello"; });
  EXPECT_EQ(reader.preamble, "HDR");
  connected->write(XorFilter::flip(" world"));
  run_until([&] { return reader.received == "hello world"; });
  connected->start_reading();
  accepted->write("ok");
  run_until([&] { return connected_rec.received == XorFilter::flip("ok"); });
  accepted->set_delegate(&accepted_rec);
}

TEST_F(Loopback, ConnectPreambleGoesFirstAndIsNeverHandedBack) {
  accepted->close();
  connected->close();
  accepted = connected = nullptr;
  accepted_rec.received.clear();
  Recorder rec;
  auto* s = new Stream(&loop, &pool);
  s->set_delegate(&rec);
  int status = 1;
  auto target = resolve_numeric("127.0.0.1", local_port(&server));
  ASSERT_EQ(s->connect(target->get(), [&](int st) { status = st; }, "PROXY UNKNOWN\r\n"), 0);
  s->write("GET /");  // queued while the connect is in flight
  run_until([&] { return status == 0 && accepted != nullptr && accepted_rec.received.size() == 20; });
  EXPECT_EQ(accepted_rec.received, "PROXY UNKNOWN\r\nGET /");
  s->close();

  // A failed connect hands back what was written, without the preamble (it is per connection).
  auto* refused = new Stream(&loop, &pool);
  refused->set_delegate(&rec);
  status = 1;
  auto nobody = resolve_numeric("127.0.0.1", 1);
  ASSERT_EQ(refused->connect(nobody->get(), [&](int st) { status = st; }, "PRE"), 0);
  refused->write("payload");
  run_until([&] { return status != 1; });
  EXPECT_NE(status, 0);
  EXPECT_EQ(refused->out().take_queued(), std::vector<std::string>{"payload"});
  refused->close();
  run_until([&] { return rec.closed == 2; });  // `rec` must outlive both close callbacks
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
