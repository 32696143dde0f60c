#include "limpet/admin/admin_server.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace limpet::admin {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class BackendChangeRoutes : public ::testing::Test {
 protected:
  BackendChangeRoutes()
      : server_(nullptr, AdminServer::Hooks{[] { return MetricsSnapshot{}; },
                                            [this](const std::string& name, const std::string& action) {
                                              actions_.push_back(name + " " + action);
                                              return Status::ok();
                                            },
                                            [this](const BackendChange& c) {
                                              seen_.push_back(c);
                                              return Reply{200, "done"};
                                            }}) {
    server_.set_token("sekrit");
  }
  std::string put(const std::string& path, const std::string& body, const std::string& auth = "Bearer sekrit") {
    return server_.handle("PUT", path, auth, body);
  }

  std::vector<BackendChange> seen_;
  std::vector<std::string> actions_;
  AdminServer server_;
};

TEST_F(BackendChangeRoutes, TokenFirst) {
  EXPECT_THAT(put("/upstreams/app/backends/b3", "{}", ""), StartsWith("HTTP/1.1 401"));
  EXPECT_THAT(put("/upstreams/app/backends/b3", "{}", "Bearer nope"), StartsWith("HTTP/1.1 403"));
  EXPECT_THAT(server_.handle("DELETE", "/upstreams/app/backends/b3", "Bearer nope"), StartsWith("HTTP/1.1 403"));
  EXPECT_TRUE(seen_.empty());
}

TEST_F(BackendChangeRoutes, JsonAndFormBodies) {
  EXPECT_THAT(put("/upstreams/app/backends/b3", R"( {"address": "127.0.0.1:3003", "weight": 2} )"),
              StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(put("/upstreams/app/backends/b4", "address=127.0.0.1%3A3004&weight=5"), StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(server_.handle("DELETE", "/upstreams/app/backends/node%2F10.0.0.1:3000", "Bearer sekrit"),
              StartsWith("HTTP/1.1 200"));
  ASSERT_EQ(seen_.size(), 3u);
  EXPECT_EQ(seen_[0].kind, BackendChange::Kind::kPut);
  EXPECT_EQ(seen_[0].upstream, "app");
  EXPECT_EQ(seen_[0].backend, "b3");
  EXPECT_EQ(seen_[0].address, "127.0.0.1:3003");
  EXPECT_EQ(seen_[0].weight, 2);
  EXPECT_EQ(seen_[1].address, "127.0.0.1:3004");
  EXPECT_EQ(seen_[1].weight, 5);
  EXPECT_EQ(seen_[2].kind, BackendChange::Kind::kDelete);
  EXPECT_EQ(seen_[2].backend, "node/10.0.0.1:3000");
}

TEST_F(BackendChangeRoutes, BadInputIs4xx) {
  EXPECT_THAT(put("/upstreams/app/backends/b3", R"({"address": "x", "colour": "red"})"),
              AllOf(StartsWith("HTTP/1.1 400"), HasSubstr("unknown key")));
  EXPECT_THAT(put("/upstreams/app/backends/b3", R"({"weight": "two"})"), StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(put("/upstreams/app/backends/b3", R"({"weight": 2)"), StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(put("/upstreams/app/backends/", "{}"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(put("/upstreams/app", "{}"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(server_.handle("DELETE", "/upstreams/app/backends/b3", "Bearer sekrit", "weight=2"),
              StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(server_.handle("PUT", "/backends/b3/drain", "Bearer sekrit"), StartsWith("HTTP/1.1 405"));
  EXPECT_TRUE(seen_.empty());
}

TEST_F(BackendChangeRoutes, ActionsOnADiscoveredBackendNameRawOrEncoded) {
  EXPECT_THAT(server_.handle("POST", "/backends/node/10.0.0.1:3000/drain", "Bearer sekrit"), StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(server_.handle("POST", "/backends/node%2F10.0.0.1%3A3000/enable", "Bearer sekrit"),
              StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(server_.handle("POST", "/backends/b%zz/drain", "Bearer sekrit"), StartsWith("HTTP/1.1 400"));
  EXPECT_EQ(actions_, (std::vector<std::string>{"node/10.0.0.1:3000 drain", "node/10.0.0.1:3000 enable"}));
}

}  // namespace
}  // namespace limpet::admin
