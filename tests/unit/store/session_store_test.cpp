#include "limpet/store/session_store.hpp"

#include <gtest/gtest.h>

#include <optional>

#include "loop_runner.hpp"
#include "redis_server.hpp"

namespace limpet::store {
namespace {

using testing::RedisServer;
using testing::run_until;
using namespace std::chrono_literals;

class SessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    uv_loop_init(&loop_);
    ASSERT_TRUE(server_.start()) << server_.error();
    auto setup = std::make_shared<StoreSetup>();
    setup->config.enabled = true;
    setup->config.address = {"127.0.0.1", server_.port(), "127.0.0.1:" + std::to_string(server_.port())};
    setup->config.key_prefix = "t:";
    setup_ = setup;
    store_ = std::make_unique<SessionStore>(&loop_, &buffers_, setup_, &stats_, &tls_counters_, "worker 1");
    store_->start();
    ASSERT_TRUE(run_until(&loop_, [&] { return store_->ready(); }));
  }
  void TearDown() override {
    store_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
  uint64_t lookups(LookupResult r) const { return stats_.lookups[static_cast<size_t>(r)].load(); }

  std::optional<PublishResult> publish(std::string_view sid, std::string_view backend) {
    std::optional<PublishResult> got;
    if (store_->publish("io", sid, backend, 60s, [&](PublishResult r) { got = r; }) == 0) return std::nullopt;
    run_until(&loop_, [&] { return got.has_value(); });
    return got;
  }
  // The backend found, "" for a miss, nullopt when the store was not asked.
  std::optional<std::string> lookup(std::string_view sid) {
    std::optional<std::string> got;
    if (store_->lookup("io", sid, [&](LookupResult, std::string_view b) { got = std::string(b); }) == 0) {
      return std::nullopt;
    }
    run_until(&loop_, [&] { return got.has_value(); });
    return got;
  }

  uv_loop_t loop_{};
  BufferPool buffers_{4};
  tls::Counters tls_counters_;
  RedisServer server_;
  StoreStats stats_;
  std::shared_ptr<const StoreSetup> setup_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTest, PublishedSessionsAreFoundByNameWithTheirTtl) {
  EXPECT_TRUE(stats_.up());
  ASSERT_EQ(publish("abc", "node-2"), PublishResult::kStored);
  EXPECT_EQ(server_.cli({"GET", "t:sid:io:abc"}), "node-2");
  const int pttl = std::stoi(server_.cli({"PTTL", "t:sid:io:abc"}));
  EXPECT_GT(pttl, 55000);
  EXPECT_LE(pttl, 60000);
  EXPECT_EQ(lookup("abc"), "node-2");
  EXPECT_EQ(lookups(LookupResult::kHit), 1u);

  store_->refresh("io", "abc", 120s);
  store_->forget("io", "gone");
  ASSERT_TRUE(run_until(&loop_, [&] { return std::stoi(server_.cli({"PTTL", "t:sid:io:abc"})) > 60000; }));
  server_.cli({"SET", "t:sid:io:gone", "node-1"});
  store_->forget("io", "gone");
  ASSERT_TRUE(run_until(&loop_, [&] { return server_.cli({"EXISTS", "t:sid:io:gone"}) == "0"; }));
}

TEST_F(SessionStoreTest, UnknownSidsAreLookedUpOnceThenNegativelyCached) {
  EXPECT_EQ(lookup("nope"), "");
  EXPECT_EQ(lookups(LookupResult::kMiss), 1u);
  EXPECT_EQ(lookup("nope"), std::nullopt);  // not asked again
  EXPECT_EQ(lookups(LookupResult::kNegative), 1u);
  EXPECT_EQ(server_.cli({"DBSIZE"}), "0");  // unknown sids never write
}

TEST_F(SessionStoreTest, AFloodOfRandomSidsIsBoundedPerWorker) {
  size_t asked = 0;
  size_t answered = 0;
  for (size_t i = 0; i < SessionStore::kMaxLookupsInFlight + 50; ++i) {
    const std::string sid = "random" + std::to_string(i);
    if (store_->lookup("io", sid, [&](LookupResult, std::string_view) { ++answered; }) != 0) ++asked;
  }
  EXPECT_EQ(asked, SessionStore::kMaxLookupsInFlight);
  EXPECT_EQ(lookups(LookupResult::kShed), 50u);
  ASSERT_TRUE(run_until(&loop_, [&] { return answered == asked; }));
  EXPECT_EQ(lookups(LookupResult::kMiss), SessionStore::kMaxLookupsInFlight);
}

TEST_F(SessionStoreTest, CancelledWaitersAreNotCalledAndFreeTheirSlot) {
  bool called = false;
  const uint64_t t = store_->lookup("io", "x", [&](LookupResult, std::string_view) { called = true; });
  ASSERT_NE(t, 0u);
  store_->cancel(t);
  ASSERT_TRUE(run_until(&loop_, [&] { return lookups(LookupResult::kMiss) == 1; }));
  EXPECT_FALSE(called);
  const uint64_t p = store_->publish("io", "y", "node-1", 60s, [&](PublishResult) { called = true; });
  store_->cancel(p);
  ASSERT_TRUE(run_until(&loop_, [&] { return stats_.publishes[0].load() == 1; }));
  EXPECT_FALSE(called);
}

TEST_F(SessionStoreTest, AStoreThatIsDownIsNotWaitedFor) {
  server_.kill();
  ASSERT_TRUE(run_until(&loop_, [&] { return !store_->ready(); }));
  EXPECT_FALSE(stats_.up());
  EXPECT_EQ(store_->publish("io", "a", "node-1", 60s, [](PublishResult) { FAIL(); }), 0u);
  EXPECT_EQ(store_->lookup("io", "a", [](LookupResult, std::string_view) { FAIL(); }), 0u);
  EXPECT_EQ(stats_.publishes[static_cast<size_t>(PublishResult::kUnavailable)].load(), 1u);
  EXPECT_EQ(lookups(LookupResult::kUnavailable), 1u);
  EXPECT_GE(stats_.connection_errors.load(), 1u);
}

TEST_F(SessionStoreTest, ASlowStoreTimesOutThePublishWithinStoreTimeout) {
  server_.signal(SIGSTOP);
  std::optional<PublishResult> got;
  const uint64_t started = uv_now(&loop_);
  ASSERT_NE(store_->publish("io", "slow", "node-1", 60s, [&](PublishResult r) { got = r; }), 0u);
  ASSERT_TRUE(run_until(&loop_, [&] { return got.has_value(); }));
  EXPECT_EQ(*got, PublishResult::kTimeout);
  EXPECT_GE(uv_now(&loop_) - started, setup_->config.store_timeout.count());
  server_.signal(SIGCONT);
}

}  // namespace
}  // namespace limpet::store
