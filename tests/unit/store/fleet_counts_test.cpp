#include "limpet/store/fleet_counts.hpp"

#include <gtest/gtest.h>

#include "loop_runner.hpp"
#include "redis_server.hpp"

namespace limpet::store {
namespace {

using testing::RedisServer;
using testing::run_until;

std::vector<std::shared_ptr<balancer::BackendState>> backends(std::initializer_list<const char*> names,
                                                               uint32_t first_id) {
  std::vector<std::shared_ptr<balancer::BackendState>> out;
  for (const char* n : names) out.push_back(std::make_shared<balancer::BackendState>(n, first_id++));
  return out;
}

TEST(FleetCounts, EncodesOwnSessionsAndSumsTheOthersByName) {
  auto ours = backends({"a", "b", "c"}, 1);
  ours[0]->sessions = 5;
  ours[0]->tunnels = 2;
  ours[1]->placing = 1;
  ours[2]->shared_sessions = 9;  // learned by another instance: it counts them, not us
  ours[2]->fleet_sessions = 4;   // neither are the others' counts ours to share
  EXPECT_EQ(FleetCounts::encode(ours), "a\t7\nb\t1\nc\t0\n");
  FleetCounts::apply({"a\t3\nb\t1\n", "a\t2\nzz\t8\nc\tjunk\n\n", "b\t-4\n"}, ours);
  EXPECT_EQ(ours[0]->fleet_sessions.load(), 5);
  EXPECT_EQ(ours[1]->fleet_sessions.load(), 1);
  EXPECT_EQ(ours[2]->fleet_sessions.load(), 0);
  EXPECT_EQ(ours[0]->live_sessions(), 7 + 5);
}

TEST(FleetCounts, TwoInstancesSeeEachOthersCountsAndForgetADeadOne) {
  RedisServer server;
  ASSERT_TRUE(server.start()) << server.error();
  uv_loop_t loop;
  uv_loop_init(&loop);
  BufferPool buffers(4);
  tls::Counters tls_counters;
  StoreStats stats;
  auto setup = std::make_shared<StoreSetup>();
  setup->config.enabled = true;
  setup->config.address = {"127.0.0.1", server.port(), "127.0.0.1:" + std::to_string(server.port())};
  setup->config.key_prefix = "t:";
  {
    auto in_a = backends({"n1", "n2"}, 1);
    auto in_b = backends({"n1", "n2"}, 11);  // another process: its own states, the same names
    in_a[0]->sessions = 10;
    in_b[1]->sessions = 4;
    FleetCounts a(&loop, &buffers, setup, &stats, &tls_counters, "lb-a");
    auto b = std::make_unique<FleetCounts>(&loop, &buffers, setup, &stats, &tls_counters, "lb-b");
    a.set_backends(in_a);
    b->set_backends(in_b);
    a.start();
    b->start();
    ASSERT_TRUE(run_until(&loop, [&] {
      return in_a[1]->fleet_sessions == 4 && in_b[0]->fleet_sessions == 10;
    }, 5000));
    EXPECT_EQ(in_a[0]->fleet_sessions.load(), 0);
    EXPECT_EQ(in_a[1]->live_sessions(), 4);
    b->stop();  // a clean stop removes its counts at once
    ASSERT_TRUE(run_until(&loop, [&] { return in_a[1]->fleet_sessions == 0; }, 5000));
    EXPECT_EQ(server.cli({"SMEMBERS", "t:fleet"}), "lb-a");
    b.reset();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

}  // namespace
}  // namespace limpet::store
