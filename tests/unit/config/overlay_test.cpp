#include "limpet/config/overlay.hpp"

#include <gtest/gtest.h>

#include "limpet/config/values.hpp"

namespace limpet::config {
namespace {

BackendConfig backend(const std::string& name, const std::string& address, uint32_t weight = 1) {
  BackendConfig b;
  b.name = name;
  b.address = *parse_address(address, AddressUse::kBackend);
  b.weight = weight;
  return b;
}

Config file_config() {
  Config c;
  UpstreamConfig u;
  u.name = "app";
  u.backends = {backend("fixed", "127.0.0.1:3001"), backend("node", "node.internal:3000", 3)};
  c.upstreams.push_back(u);
  return c;
}

std::vector<std::string> names(const Config& c) {
  std::vector<std::string> out;
  for (const auto& b : c.upstreams.at(0).backends) out.push_back(b.name);
  return out;
}

TEST(Overlay, UnresolvedNameHasNoBackends) {
  EXPECT_EQ(names(effective_config(file_config(), {})), std::vector<std::string>{"fixed"});
}

TEST(Overlay, EachAddressIsABackendNamedStably) {
  Overlay o;
  o.resolved["app"]["node"] = {"node.internal", 3000, {"10.0.0.1", "10.0.0.2", "fd00::1"}};
  const Config c = effective_config(file_config(), o);
  EXPECT_EQ(names(c), (std::vector<std::string>{"fixed", "node/10.0.0.1:3000", "node/10.0.0.2:3000",
                                                 "node/[fd00::1]:3000"}));
  const BackendConfig& b = c.upstreams[0].backends[1];
  EXPECT_EQ(b.from, "node");
  EXPECT_EQ(b.weight, 3u);
  EXPECT_FALSE(b.address.by_name);
  EXPECT_EQ(b.address.host, "10.0.0.1");
  EXPECT_EQ(b.address.port, 3000);
  EXPECT_EQ(c.upstreams[0].backends[3].address.text, "[fd00::1]:3000");
  // One address fewer: the others keep their names (the ring is keyed by name).
  o.resolved["app"]["node"].ips = {"10.0.0.2", "fd00::1"};
  EXPECT_EQ(names(effective_config(file_config(), o)),
            (std::vector<std::string>{"fixed", "node/10.0.0.2:3000", "node/[fd00::1]:3000"}));
}

TEST(Overlay, AnAnswerForAnotherHostOrPortIsNotUsed) {
  Overlay o;
  o.resolved["app"]["node"] = {"node.internal", 4000, {"10.0.0.1"}};
  EXPECT_EQ(names(effective_config(file_config(), o)), std::vector<std::string>{"fixed"});
}

TEST(Overlay, AdminChangesApplyByNameOrConfiguredName) {
  Overlay o;
  o.resolved["app"]["node"] = {"node.internal", 3000, {"10.0.0.1", "10.0.0.2"}};
  AdminChanges& a = o.admin["app"];
  a.added["extra"] = backend("extra", "127.0.0.1:3009", 2);
  a.weights["node"] = 7;
  a.weights["fixed"] = 4;
  a.removed.insert("node/10.0.0.2:3000");
  const Config c = effective_config(file_config(), o);
  EXPECT_EQ(names(c), (std::vector<std::string>{"fixed", "node/10.0.0.1:3000", "extra"}));
  EXPECT_EQ(c.upstreams[0].backends[0].weight, 4u);
  EXPECT_EQ(c.upstreams[0].backends[1].weight, 7u);
  EXPECT_EQ(c.upstreams[0].backends[2].weight, 2u);
  a.removed.insert("node");  // every address of the name
  EXPECT_EQ(names(effective_config(file_config(), o)), (std::vector<std::string>{"fixed", "extra"}));
}

TEST(Values, ResolverAndNumericAddress) {
  auto r = parse_resolver("127.0.0.1:5353,::1");
  ASSERT_TRUE(r) << r.message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1].host, "::1");
  EXPECT_EQ((*r)[1].port, 53);
  EXPECT_FALSE(parse_resolver("127.0.0.1,"));
  EXPECT_EQ(numeric_address("::1", 80).text, "[::1]:80");
  EXPECT_EQ(numeric_address("10.1.2.3", 80).text, "10.1.2.3:80");
}

}  // namespace
}  // namespace limpet::config
