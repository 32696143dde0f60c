// The hand-over channel between an old and a new limpet process, over a real socketpair.
#include "limpet/runtime/handover.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <uv.h>

#include <string>
#include <vector>

namespace limpet::runtime::handover {
namespace {

struct ChannelPair {
  ChannelPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    old_side = std::make_unique<Channel>(fds[0]);
    new_side = std::make_unique<Channel>(fds[1]);
  }
  std::unique_ptr<Channel> old_side;
  std::unique_ptr<Channel> new_side;
};

// Runs `loop` until `done()` or the deadline (a count of loop iterations with a 10 ms timer,
// not a wall-clock window: a stalled test fails instead of hanging).
template <typename Done>
void run_until(uv_loop_t* loop, Done done) {
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, [](uv_timer_t*) {}, 10, 10);
  for (int i = 0; i < 500 && !done(); ++i) uv_run(loop, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
}

TEST(HandoverChannel, ReceiveReturnsMessagesInOrderFromOneRead) {
  ChannelPair pair;
  ASSERT_TRUE(pair.old_side->send(Type::kJournal, "first").is_ok());
  ASSERT_TRUE(pair.old_side->send(Type::kReleased, "").is_ok());
  auto a = pair.new_side->receive(5000);
  auto b = pair.new_side->receive(5000);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->type, Type::kJournal);
  EXPECT_EQ(a->payload, "first");
  EXPECT_EQ(b->type, Type::kReleased);
}

// The hand-over bug this guards: kReleased and a journal blob arrive in one read; receive()
// returns kReleased and the blob stays buffered, where a poll on the socket never sees it.
TEST(HandoverChannel, WatcherDeliversWhatReceiveLeftBufferedThenNewMessages) {
  ChannelPair pair;
  ASSERT_TRUE(pair.old_side->send(Type::kReleased, "").is_ok());
  ASSERT_TRUE(pair.old_side->send(Type::kJournal, "buffered").is_ok());
  auto released = pair.new_side->receive(5000);
  ASSERT_TRUE(released);
  ASSERT_EQ(released->type, Type::kReleased);

  uv_loop_t loop;
  uv_loop_init(&loop);
  std::vector<std::string> journal;
  auto watcher = std::make_unique<ChannelWatcher>(
      &loop, pair.new_side.get(), [&journal](Message& m) { journal.push_back(m.payload); },
      [](const std::string&) {});
  ASSERT_TRUE(pair.old_side->send(Type::kJournal, "later").is_ok());
  run_until(&loop, [&journal] { return journal.size() >= 2; });
  EXPECT_EQ(journal, (std::vector<std::string>{"buffered", "later"}));

  watcher->close();
  uv_run(&loop, UV_RUN_DEFAULT);
  watcher.reset();
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

TEST(HandoverChannel, TakeBufferedEmptiesTheBuffer) {
  ChannelPair pair;
  ASSERT_TRUE(pair.old_side->send(Type::kHello, "1").is_ok());
  ASSERT_TRUE(pair.old_side->send(Type::kEnd, "").is_ok());
  ASSERT_TRUE(pair.new_side->receive(5000));
  auto rest = pair.new_side->take_buffered();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].type, Type::kEnd);
  EXPECT_TRUE(pair.new_side->take_buffered().empty());
}

}  // namespace
}  // namespace limpet::runtime::handover
