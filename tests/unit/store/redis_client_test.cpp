#include "limpet/store/redis_client.hpp"

#include <gtest/gtest.h>

#include <array>
#include <optional>

#include "loop_runner.hpp"
#include "redis_server.hpp"

namespace limpet::store {
namespace {

using testing::RedisServer;
using testing::run_until;

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override { uv_loop_init(&loop_); }
  void TearDown() override {
    client_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);  // the closes complete
    uv_loop_close(&loop_);
  }

  RedisSettings settings(const RedisServer& server) {
    RedisSettings s;
    s.address = *net::resolve_numeric("127.0.0.1", server.port());
    s.address_config = {"127.0.0.1", server.port(), "127.0.0.1:" + std::to_string(server.port())};
    s.connect_timeout_ms = 1000;
    return s;
  }
  void connect(RedisSettings s) {
    client_ = std::make_unique<RedisClient>(&loop_, &buffers_, std::move(s), &tls_counters_,
                                            [this](bool up, const std::string& why) {
                                              transitions_.push_back(up ? "up" : "down: " + why);
                                            });
    client_->start();
  }
  // Sends and waits for the reply (or the deadline).
  std::optional<Reply> call(std::initializer_list<std::string_view> args, uint64_t timeout_ms = 0) {
    std::vector<std::string_view> argv(args);
    std::optional<Reply> got;
    if (client_->send(argv, timeout_ms, [&got](const Reply& r) { got = r; }) == 0) return std::nullopt;
    run_until(&loop_, [&] { return got.has_value(); });
    return got;
  }

  uv_loop_t loop_{};
  BufferPool buffers_{4};
  tls::Counters tls_counters_;
  std::unique_ptr<RedisClient> client_;
  std::vector<std::string> transitions_;
};

TEST_F(RedisClientTest, PipelinesCommandsAndAnswersInOrder) {
  RedisServer server;
  ASSERT_TRUE(server.start()) << server.error();
  connect(settings(server));
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); }));
  EXPECT_EQ(transitions_, std::vector<std::string>{"up"});
  std::vector<std::string> order;
  for (int i = 0; i < 100; ++i) {
    const std::string v = std::to_string(i);
    const std::string key = "k" + v;
    std::array<std::string_view, 3> set{"SET", key, v};
    ASSERT_NE(client_->send(set, 0, nullptr), 0u);
    std::array<std::string_view, 2> get{"GET", key};
    client_->send(get, 0, [&order](const Reply& r) { order.push_back(r.str); });
  }
  EXPECT_GT(client_->in_flight(), 0u);  // nothing waited for a reply before sending the next
  ASSERT_TRUE(run_until(&loop_, [&] { return order.size() == 100; }));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], std::to_string(i));
}

TEST_F(RedisClientTest, AuthenticatesWithRequirepassAndAclUsers) {
  RedisServer server({"requirepass sekrit", "user limpet on >pw ~limpet:* +@all"});
  ASSERT_TRUE(server.start()) << server.error();
  RedisSettings plain = settings(server);
  plain.password = "sekrit";
  plain.database = 3;
  connect(plain);
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); })) << ::testing::PrintToString(transitions_);
  ASSERT_TRUE(call({"SET", "limpet:x", "1"}).has_value());
  EXPECT_EQ(server.cli({"-n", "3", "GET", "limpet:x"}, {"-a", "sekrit", "--no-auth-warning"}), "1");

  RedisSettings acl = settings(server);
  acl.username = "limpet";
  acl.password = "pw";
  connect(acl);
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); }));
  auto denied = call({"SET", "other:x", "1"});  // the ACL's key pattern is enforced by Redis
  ASSERT_TRUE(denied.has_value());
  EXPECT_EQ(denied->type, Reply::Type::kError);
}

TEST_F(RedisClientTest, WrongPasswordIsDownOnceAndNeverReady) {
  RedisServer server({"requirepass sekrit"});
  ASSERT_TRUE(server.start()) << server.error();
  RedisSettings s = settings(server);
  s.password = "wrong";
  connect(s);
  // Several reconnects happen within this window (backoff 100, 200, 400 ms): one report.
  ASSERT_TRUE(run_until(&loop_, [&] { return !transitions_.empty(); }));
  uint64_t until = uv_now(&loop_) + 800;
  run_until(&loop_, [&] { return uv_now(&loop_) >= until; }, 2000);
  ASSERT_EQ(transitions_.size(), 1u);
  EXPECT_NE(transitions_[0].find("AUTH"), std::string::npos) << transitions_[0];
  EXPECT_FALSE(client_->ready());
  std::array<std::string_view, 1> ping{"PING"};
  EXPECT_EQ(client_->send(ping, 0, nullptr), 0u);  // refused at once, nothing waits
}

TEST_F(RedisClientTest, ServerDeathFailsWaitersAndReconnectsWhenItIsBack) {
  auto server = std::make_unique<RedisServer>();
  ASSERT_TRUE(server->start()) << server->error();
  connect(settings(*server));
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); }));
  std::optional<Reply> waiting;
  std::array<std::string_view, 3> blpop{"BLPOP", "nothing", "0"};  // answered only by the death
  ASSERT_NE(client_->send(blpop, 0, [&](const Reply& r) { waiting = r; }), 0u);
  run_until(&loop_, [&] { return false; }, 50);  // written
  server->kill();
  ASSERT_TRUE(run_until(&loop_, [&] { return waiting.has_value(); }));
  EXPECT_EQ(waiting->type, Reply::Type::kDisconnected);
  EXPECT_EQ(transitions_.back().rfind("down", 0), 0u);
  ASSERT_TRUE(server->start()) << server->error();  // same port
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); }, 10000));
  EXPECT_EQ(transitions_, (std::vector<std::string>{"up", transitions_[1], "up"}));
  EXPECT_TRUE(call({"PING"}).has_value());
}

TEST_F(RedisClientTest, TimeoutAnswersTheCallerAndAStalledServerIsDropped) {
  RedisServer server;
  ASSERT_TRUE(server.start()) << server.error();
  RedisSettings s = settings(server);
  s.connect_timeout_ms = 300;
  connect(s);
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); }));
  server.signal(SIGSTOP);  // alive, silent: no FIN will come
  auto timed_out = call({"PING"}, 50);
  ASSERT_TRUE(timed_out.has_value());
  EXPECT_EQ(timed_out->type, Reply::Type::kTimeout);
  // Overdue by connect_timeout: the connection is given up and reported down.
  ASSERT_TRUE(run_until(&loop_, [&] { return transitions_.size() == 2; }));
  EXPECT_NE(transitions_[1].find("no reply"), std::string::npos) << transitions_[1];
}

TEST_F(RedisClientTest, CancelledCallbackNeverRuns) {
  RedisServer server;
  ASSERT_TRUE(server.start()) << server.error();
  connect(settings(server));
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); }));
  bool ran = false;
  std::array<std::string_view, 1> ping{"PING"};
  const uint64_t t = client_->send(ping, 0, [&](const Reply&) { ran = true; });
  client_->cancel(t);
  ASSERT_TRUE(call({"PING"}).has_value());  // replies are in order: the first one came
  EXPECT_FALSE(ran);
}

TEST_F(RedisClientTest, SpeaksTlsWithAVerifiedCertificate) {
  RedisServer server;
  server.enable_tls();
  ASSERT_TRUE(server.start()) << server.error();
  config::UpstreamTls t;
  t.enabled = true;
  t.verify = true;
  t.ca_file = server.ca_file();
  auto ctx = tls::ClientContext::build(t, "session_store");
  ASSERT_TRUE(ctx) << ctx.message();
  RedisSettings s = settings(server);
  s.tls = ctx->get();
  connect(s);
  ASSERT_TRUE(run_until(&loop_, [&] { return client_->ready(); })) << ::testing::PrintToString(transitions_);
  auto pong = call({"PING"});
  ASSERT_TRUE(pong.has_value());
  EXPECT_EQ(pong->str, "PONG");
}

}  // namespace
}  // namespace limpet::store
