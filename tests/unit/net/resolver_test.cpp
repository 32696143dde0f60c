#include "limpet/net/resolver.hpp"

#include <arpa/inet.h>
#include <ares.h>
#include <gtest/gtest.h>

#include <cstring>

namespace limpet::net {
namespace {

TEST(Resolver, OutcomesFromStatus) {
  EXPECT_EQ(to_resolved(ARES_ENOTFOUND, nullptr).kind, Resolved::Kind::kGone);  // NXDOMAIN
  EXPECT_EQ(to_resolved(ARES_ENODATA, nullptr).kind, Resolved::Kind::kGone);
  EXPECT_EQ(to_resolved(ARES_SUCCESS, nullptr).kind, Resolved::Kind::kGone);  // no address
  // A failure says nothing about the name: the caller keeps what it had.
  for (int status : {ARES_ETIMEOUT, ARES_ECONNREFUSED, ARES_ESERVFAIL, ARES_EREFUSED}) {
    const Resolved r = to_resolved(status, nullptr);
    EXPECT_EQ(r.kind, Resolved::Kind::kFailed) << status;
    EXPECT_FALSE(r.error.empty());
  }
}

TEST(Resolver, AddressesAreSortedAndUnique) {
  sockaddr_in a{}, b{};
  a.sin_family = b.sin_family = AF_INET;
  inet_pton(AF_INET, "10.0.0.2", &a.sin_addr);
  inet_pton(AF_INET, "10.0.0.1", &b.sin_addr);
  sockaddr_in6 c{};
  c.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "fd00::1", &c.sin6_addr);
  ares_addrinfo_node n4{}, n3{}, n2{}, n1{};
  n1 = {0, 0, AF_INET, SOCK_STREAM, 0, sizeof a, reinterpret_cast<sockaddr*>(&a), &n2};
  n2 = {0, 0, AF_INET6, SOCK_STREAM, 0, sizeof c, reinterpret_cast<sockaddr*>(&c), &n3};
  n3 = {0, 0, AF_INET, SOCK_STREAM, 0, sizeof b, reinterpret_cast<sockaddr*>(&b), &n4};
  n4 = {0, 0, AF_INET, SOCK_STREAM, 0, sizeof a, reinterpret_cast<sockaddr*>(&a), nullptr};  // twice
  ares_addrinfo info{};
  info.nodes = &n1;
  const Resolved r = to_resolved(ARES_SUCCESS, &info);
  EXPECT_EQ(r.kind, Resolved::Kind::kOk);
  EXPECT_EQ(r.hosts, (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "fd00::1"}));
}

TEST(Resolver, ResolveNowAnswersEveryHostWithinItsTimeout) {
  // A server that never answers (a closed UDP port on loopback refuses): a failure for each.
  ResolverOptions o;
  o.servers = "127.0.0.1:9";
  o.timeout_ms = 300;
  const auto results = resolve_now(o, {"a.example", "b.example"});
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) EXPECT_EQ(r.kind, Resolved::Kind::kFailed) << r.error;
  EXPECT_EQ(resolve_now(o, {}).size(), 0u);
}

}  // namespace
}  // namespace limpet::net
