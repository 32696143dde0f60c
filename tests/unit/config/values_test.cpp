#include "limpet/config/values.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace limpet::config {
namespace {

using ::testing::HasSubstr;

TEST(ParseDuration, UnitsAndDecimals) {
  EXPECT_EQ(parse_duration("250ms")->count(), 250);
  EXPECT_EQ(parse_duration("30s")->count(), 30000);
  EXPECT_EQ(parse_duration("1.5s")->count(), 1500);
  EXPECT_EQ(parse_duration("0.25s")->count(), 250);
  EXPECT_EQ(parse_duration("5m")->count(), 300000);
  EXPECT_EQ(parse_duration("1.5m")->count(), 90000);
  EXPECT_EQ(parse_duration("1h")->count(), 3600000);
  EXPECT_EQ(parse_duration("7d")->count(), 7LL * 24 * 3600 * 1000);
  EXPECT_EQ(parse_duration("0s")->count(), 0);
  EXPECT_EQ(parse_duration("007s")->count(), 7000);
}

TEST(ParseDuration, Rejects) {
  for (const char* bad : {"", "30", "-1s", "abc", "s", "ms", "1.s", ".5s", "1,5s", "1 s", "1S", "1sec", "+1s",
                          "1e3ms", "1.5.0s", "30 s"}) {
    EXPECT_FALSE(parse_duration(bad)) << bad;
  }
  EXPECT_THAT(parse_duration("30").message(), HasSubstr("missing unit"));
  EXPECT_THAT(parse_duration("-1s").message(), HasSubstr("negative"));
  EXPECT_THAT(parse_duration("abc").message(), HasSubstr("\"abc\""));
}

TEST(ParseDuration, WholeMillisecondsAndBounds) {
  EXPECT_THAT(parse_duration("1.5ms").message(), HasSubstr("whole number of milliseconds"));
  EXPECT_THAT(parse_duration("0.0001s").message(), HasSubstr("whole number of milliseconds"));
  EXPECT_EQ(parse_duration("3650d")->count(), 3650LL * 24 * 3600 * 1000);
  EXPECT_THAT(parse_duration("3651d").message(), HasSubstr("too long"));
  EXPECT_FALSE(parse_duration("99999999999999999999999s"));
  EXPECT_FALSE(parse_duration("1.00000000000000000000s"));
}

TEST(ParseSize, UnitsCaseInsensitive) {
  EXPECT_EQ(*parse_size("512"), 512u);
  EXPECT_EQ(*parse_size("512b"), 512u);
  EXPECT_EQ(*parse_size("0"), 0u);
  EXPECT_EQ(*parse_size("16k"), 16u * 1024);
  EXPECT_EQ(*parse_size("16kb"), 16u * 1024);
  EXPECT_EQ(*parse_size("16KB"), 16u * 1024);
  EXPECT_EQ(*parse_size("1m"), 1u << 20);
  EXPECT_EQ(*parse_size("1Mb"), 1u << 20);
  EXPECT_EQ(*parse_size("1g"), size_t{1} << 30);
  EXPECT_EQ(*parse_size("4GB"), size_t{4} << 30);
}

TEST(ParseSize, Rejects) {
  for (const char* bad : {"", "k", "kb", "-1", "1.5m", "lots", "16 k", "16kib", "1t", "0x10"}) {
    EXPECT_FALSE(parse_size(bad)) << bad;
  }
  EXPECT_THAT(parse_size("lots").message(), HasSubstr("\"lots\""));
  EXPECT_FALSE(parse_size("99999999999999999999"));
}

TEST(ParseAddress, ListenForms) {
  auto a = parse_address("127.0.0.1:8080", AddressUse::kListen);
  ASSERT_TRUE(a) << a.message();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  EXPECT_EQ(a->text, "127.0.0.1:8080");

  a = parse_address("*:80", AddressUse::kListen);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "0.0.0.0");
  EXPECT_EQ(a->text, "*:80");

  a = parse_address("[::1]:8080", AddressUse::kListen);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "::1");

  a = parse_address("[0:0::0:1]:65535", AddressUse::kListen);  // canonicalised
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 65535);

  a = parse_address("localhost:3001", AddressUse::kConnect);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
}

TEST(ParseAddress, Rejects) {
  const auto message = [](const char* text, AddressUse use = AddressUse::kListen) {
    auto a = parse_address(text, use);
    EXPECT_FALSE(a) << text;
    return a ? std::string() : a.message();
  };
  EXPECT_THAT(message("127.0.0.1"), HasSubstr("missing port"));
  EXPECT_THAT(message("127.0.0.1:0"), HasSubstr("1 to 65535"));
  EXPECT_THAT(message("127.0.0.1:99999"), HasSubstr("1 to 65535"));
  EXPECT_THAT(message("127.0.0.1:http"), HasSubstr("1 to 65535"));
  EXPECT_THAT(message("127.0.0.1:-1"), HasSubstr("1 to 65535"));
  EXPECT_THAT(message(":8080"), HasSubstr("missing host"));
  EXPECT_THAT(message("::1:8080"), HasSubstr("brackets"));
  EXPECT_THAT(message("[127.0.0.1]:80"), HasSubstr("not a numeric"));
  EXPECT_THAT(message("[::1]8080"), HasSubstr("bracketed"));
  EXPECT_THAT(message("[::1"), HasSubstr("bracketed"));
  EXPECT_THAT(message("example.com:80", AddressUse::kConnect), HasSubstr("not resolved"));
  EXPECT_THAT(message("10.0.0.256:80"), HasSubstr("not a numeric"));
  EXPECT_THAT(message("*:80", AddressUse::kConnect), HasSubstr("only for listeners"));
  EXPECT_THAT(message("no port here", AddressUse::kConnect), HasSubstr("\"no port here\""));
}

TEST(ParseCidr, CanonicalForm) {
  EXPECT_EQ(*parse_cidr("10.0.0.0/8"), "10.0.0.0/8");
  EXPECT_EQ(*parse_cidr("127.0.0.1"), "127.0.0.1/32");
  EXPECT_EQ(*parse_cidr("::1"), "::1/128");
  EXPECT_EQ(*parse_cidr("fd00:0::/8"), "fd00::/8");
  EXPECT_EQ(*parse_cidr("0.0.0.0/0"), "0.0.0.0/0");
  for (const char* bad : {"", "10.0.0.0/33", "::1/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/x", "host/8", "/8"}) {
    EXPECT_FALSE(parse_cidr(bad)) << bad;
  }
  EXPECT_THAT(parse_cidr("10.0.0.0/33").message(), HasSubstr("CIDR"));
}

TEST(ParseHashKey, Kinds) {
  auto k = parse_hash_key("query:room");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->kind, HashKeySource::Kind::kQuery);
  EXPECT_EQ(k->name, "room");
  EXPECT_EQ(k->text, "query:room");
  EXPECT_EQ(parse_hash_key("header:X-Tenant")->kind, HashKeySource::Kind::kHeader);
  EXPECT_EQ(parse_hash_key("header:X-Tenant")->name, "X-Tenant");
  EXPECT_EQ(parse_hash_key("cookie:uid")->kind, HashKeySource::Kind::kCookie);
  EXPECT_EQ(parse_hash_key("ip")->kind, HashKeySource::Kind::kIp);
  EXPECT_TRUE(parse_hash_key("ip")->name.empty());

  EXPECT_THAT(parse_hash_key("query").message(), HasSubstr("missing name"));
  EXPECT_THAT(parse_hash_key("query:").message(), HasSubstr("name"));
  EXPECT_THAT(parse_hash_key("ip:x").message(), HasSubstr("takes no name"));
  EXPECT_THAT(parse_hash_key("path:x").message(), HasSubstr("unknown key kind"));
  EXPECT_THAT(parse_hash_key("header:a b").message(), HasSubstr("malformed"));
}

TEST(ParseStatusRange, Forms) {
  EXPECT_EQ(*parse_status_range("200-399"), std::make_pair(200, 399));
  EXPECT_EQ(*parse_status_range("204"), std::make_pair(204, 204));
  for (const char* bad : {"", "99", "600", "399-200", "200-", "-399", "2xx", "200-399-400"}) {
    EXPECT_FALSE(parse_status_range(bad)) << bad;
  }
}

TEST(Primes, IsPrimeAndNext) {
  EXPECT_FALSE(is_prime(0));
  EXPECT_FALSE(is_prime(1));
  EXPECT_TRUE(is_prime(2));
  EXPECT_TRUE(is_prime(65537));
  EXPECT_FALSE(is_prime(65536));
  EXPECT_EQ(next_prime(65536), 65537u);
  EXPECT_EQ(next_prime(70000), 70001u);
  EXPECT_EQ(next_prime(2), 2u);
}

}  // namespace
}  // namespace limpet::config
