// Issue 16's config parts: guardrails (-t refuses or warns), include, ${ENV}, and limpet -T's
// dump loading back to the same configuration.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "limpet/config/dump.hpp"
#include "limpet/config/loader.hpp"
#include "limpet/config/values.hpp"

namespace limpet::config {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

constexpr const char* kListener = R"([[listener]]
address = "127.0.0.1:8080"
upstream = "app"
)";

constexpr const char* kUpstream = R"([[upstream]]
name = "app"

[[upstream.backend]]
name = "b1"
address = "127.0.0.1:3001"
)";

std::string minimal() { return std::string(kListener) + "\n" + kUpstream; }

std::string load_error(const std::string& text) {
  auto loaded = load_string(text, "t.toml");
  EXPECT_FALSE(loaded) << "loaded without error:\n" << text;
  return loaded ? std::string() : loaded.message();
}

// A fresh directory for files that include each other, removed with the test.
class Files : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("limpet-fleet-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "conf.d");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  fs::path dir_;
};

// --- guardrails ------------------------------------------------------------------------------

TEST(Guardrails, AddressWrittenAsUrl) {
  std::string text = minimal();
  text.replace(text.find("\"127.0.0.1:3001\""), 16, "\"http://127.0.0.1:3001/\"");
  const std::string message = load_error(text);
  EXPECT_THAT(message, StartsWith("t.toml:10:11: address: write HOST:PORT, without a scheme"));
  EXPECT_THAT(message, HasSubstr("such as \"127.0.0.1:3001\""));
  EXPECT_THAT(parse_address("ws://[::1]:80", AddressUse::kListen).message(), HasSubstr("such as \"[::1]:80\""));
}

TEST(Guardrails, AdminRefusesWildcardUnlessAllowed) {
  for (const char* address : {"0.0.0.0:9090", "*:9090", "[::]:9090"}) {
    const std::string admin = std::string("[admin]\naddress = \"") + address + "\"\n";
    EXPECT_THAT(load_error(admin + minimal()), StartsWith("t.toml:2:11: address: ")) << address;
    EXPECT_THAT(load_error(admin + minimal()), HasSubstr("allow_public = true"));
    auto allowed = load_string("[admin]\nallow_public = true\naddress = \"" + std::string(address) + "\"\n" + minimal(),
                               "t.toml");
    ASSERT_TRUE(allowed) << allowed.message();
    EXPECT_TRUE(allowed->admin.allow_public);
  }
}

TEST(Guardrails, WarnsBelowThePingWindow) {
  std::string text = minimal();
  text.insert(text.find("\n[[upstream.backend]]"), "session_ttl = \"30s\"\nread_timeout = \"40s\"\n");
  auto loaded = load_string(text, "t.toml");
  ASSERT_TRUE(loaded) << loaded.message();
  ASSERT_EQ(loaded->warnings.size(), 2u);
  EXPECT_THAT(loaded->warnings[0], StartsWith("t.toml:7:15: session_ttl: \"30s\" is shorter than Engine.IO's ping"));
  EXPECT_THAT(loaded->warnings[1], StartsWith("t.toml:8:16: read_timeout: \"40s\" is shorter"));

  // Without Engine.IO paths there is no ping window to respect; the defaults respect it.
  text.insert(text.find("session_ttl"), "engineio_paths = []\n");
  EXPECT_THAT(load_string(text, "t.toml")->warnings, IsEmpty());
  EXPECT_THAT(load_string(minimal(), "t.toml")->warnings, IsEmpty());
}

TEST_F(Files, UnwritablePidFileAndAccessLogAreErrors) {
  const std::string missing = (dir_ / "no-such-dir" / "limpet.pid").string();
  auto loaded = load_file(write("a.toml", "[server]\npid_file = \"" + missing + "\"\n" + minimal()));
  ASSERT_FALSE(loaded);
  EXPECT_THAT(loaded.message(), StartsWith((dir_ / "a.toml").string() + ":2:12: pid_file: \"" + missing + "\""));
  EXPECT_THAT(loaded.message(), HasSubstr("No such file or directory"));

  const std::string log = (dir_ / "no-such-dir" / "access.log").string();
  loaded = load_file(write("b.toml", "[server]\naccess_log = \"" + log + "\"\n" + minimal()));
  ASSERT_FALSE(loaded);
  EXPECT_THAT(loaded.message(), HasSubstr(":2:14: access_log: "));

  const std::string ok = (dir_ / "limpet.pid").string();
  EXPECT_TRUE(load_file(write("c.toml", "[server]\npid_file = \"" + ok + "\"\naccess_log = \"off\"\n" + minimal())));
}

TEST(Guardrails, ReadyPathIsAPath) {
  std::string text = minimal();
  text.insert(text.find("\n[[upstream]]"), "ready_path = \"/limpet-ready\"\n");
  EXPECT_EQ(load_string(text, "t.toml")->listeners[0].ready_path, "/limpet-ready");
  text.replace(text.find("\"/limpet-ready\""), 15, "\"limpet-ready\"");
  EXPECT_THAT(load_error(text), StartsWith("t.toml:4:14: ready_path: expected a path"));
}

TEST(Listener, Http2KeysAndTheirErrors) {
  std::string text = minimal();
  EXPECT_FALSE(load_string(text, "t.toml")->listeners[0].http2);
  text.insert(text.find("\n[[upstream]]"), "http2 = true\nhttp2_max_streams = 64\n");
  const auto loaded = load_string(text, "t.toml");
  ASSERT_TRUE(loaded) << loaded.message();
  EXPECT_TRUE(loaded->listeners[0].http2);
  EXPECT_EQ(loaded->listeners[0].http2_max_streams, 64u);
  std::string bad = text;
  bad.replace(bad.find("http2 = true"), 12, "http2 = \"on\"");
  EXPECT_THAT(load_error(bad), StartsWith("t.toml:4:9: http2: expected"));
  bad = text;
  bad.replace(bad.find("= 64"), 4, "= 0");
  EXPECT_THAT(load_error(bad), AllOf(StartsWith("t.toml:5:21: http2_max_streams:"), HasSubstr("1")));
}

// --- include ---------------------------------------------------------------------------------

TEST_F(Files, IncludeMergesTablesInSortedOrder) {
  write("conf.d/20-b.toml", "[[upstream.backend]]\nname = \"ignored\"\naddress = \"127.0.0.1:1\"\n"
                            "[[listener]]\nname = \"second\"\naddress = \"127.0.0.1:8082\"\nupstream = \"app\"\n");
  write("conf.d/10-a.toml", std::string("[server]\nworkers = 3\n") + kUpstream);
  write("conf.d/notes.txt", "not toml");
  auto loaded = load_file(write("main.toml", std::string("include = [\"conf.d/*.toml\"]\n[server]\nlog_level = "
                                                         "\"warn\"\n") + kListener));
  // Each file is parsed on its own: [[upstream.backend]] at the top of 20-b.toml cannot add to
  // the [[upstream]] of 10-a.toml, so it is refused (its "upstream" is a plain table there).
  ASSERT_FALSE(loaded);
  EXPECT_THAT(loaded.message(), HasSubstr("upstream"));

  write("conf.d/20-b.toml", "[[listener]]\nname = \"second\"\naddress = \"127.0.0.1:8082\"\nupstream = \"app\"\n");
  loaded = load_file((dir_ / "main.toml").string());
  ASSERT_TRUE(loaded) << loaded.message();
  EXPECT_EQ(loaded->server.workers, 3u);
  EXPECT_EQ(loaded->server.log_level, "warn");
  ASSERT_EQ(loaded->listeners.size(), 2u);
  EXPECT_EQ(loaded->listeners[1].name, "second");
  ASSERT_EQ(loaded->upstreams.size(), 1u);
  EXPECT_EQ(loaded->upstreams[0].backends[0].file, (dir_ / "conf.d/10-a.toml").string());
}

TEST_F(Files, IncludeRefusesAKeySetTwice) {
  write("conf.d/a.toml", "[server]\nworkers = 3\n");
  auto loaded = load_file(write("main.toml", "include = [\"conf.d/a.toml\"]\n[server]\nworkers = 2\n" + minimal()));
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.message(), (dir_ / "conf.d/a.toml").string() + ":2:11: \"server.workers\" is already set at " +
                                  (dir_ / "main.toml").string() + ":3:11");
}

TEST_F(Files, IncludeErrorsNameTheIncludedFile) {
  write("conf.d/a.toml", "[server]\nworkers = \"many\"\n");
  auto loaded = load_file(write("main.toml", "include = [\"conf.d/a.toml\"]\n" + minimal()));
  ASSERT_FALSE(loaded);
  EXPECT_THAT(loaded.message(), StartsWith((dir_ / "conf.d/a.toml").string() + ":2:11: workers: "));

  write("conf.d/a.toml", "[server\n");
  EXPECT_THAT(load_file((dir_ / "main.toml").string()).message(), StartsWith((dir_ / "conf.d/a.toml").string() + ":1:"));

  loaded = load_file(write("main.toml", "include = [\"conf.d/missing.toml\"]\n" + minimal()));
  EXPECT_THAT(loaded.message(), StartsWith((dir_ / "main.toml").string() + ":1:12: include: "));
  EXPECT_THAT(loaded.message(), HasSubstr("no such file"));
  // An empty conf.d is fine.
  EXPECT_TRUE(load_file(write("main.toml", "include = [\"conf.d/*.conf\"]\n" + minimal())));
}

TEST_F(Files, IncludeNestsOnlyAFewLevels) {
  write("conf.d/loop.toml", "include = [\"loop.toml\"]\n");
  auto loaded = load_file(write("main.toml", "include = [\"conf.d/loop.toml\"]\n" + minimal()));
  ASSERT_FALSE(loaded);
  EXPECT_THAT(loaded.message(), StartsWith((dir_ / "conf.d/loop.toml").string() + ":1:11: include: nested more"));
}

// --- ${ENV} ----------------------------------------------------------------------------------

TEST(Env, ExpandsEveryString) {
  ::setenv("LIMPET_TEST_TOKEN", "s3cret", 1);
  ::setenv("LIMPET_TEST_PORT", "3001", 1);
  std::string text = "[admin]\ntoken = \"${LIMPET_TEST_TOKEN}\"\n" + minimal();
  text.replace(text.find("3001"), 4, "${LIMPET_TEST_PORT}");
  auto loaded = load_string(text, "t.toml");
  ASSERT_TRUE(loaded) << loaded.message();
  EXPECT_EQ(loaded->admin.token, "s3cret");
  EXPECT_EQ(loaded->upstreams[0].backends[0].address.port, 3001);
  EXPECT_EQ(*expand_env("a$${b}$c$"), "a${b}$c$");
  EXPECT_EQ(escape_env("a${b}"), "a$${b}");
}

TEST(Env, UnsetOrMalformedIsAnError) {
  ::unsetenv("LIMPET_TEST_UNSET");
  const std::string text = "[admin]\ntoken = \"x${LIMPET_TEST_UNSET}\"\n" + minimal();
  EXPECT_EQ(load_error(text), "t.toml:2:9: ${LIMPET_TEST_UNSET}: the environment variable is not set");
  EXPECT_THAT(load_error("[admin]\ntoken = \"${1x}\"\n" + minimal()), StartsWith("t.toml:2:9: expected ${NAME}"));
  EXPECT_THAT(load_error("[admin]\ntoken = \"${OPEN\"\n" + minimal()), StartsWith("t.toml:2:9: expected ${NAME}"));
}

// --- limpet -T -------------------------------------------------------------------------------

// Every table and a non-default value wherever the loader has a choice.
constexpr const char* kRich = R"(
[server]
workers = 2
log_level = "debug"
access_log = "off"
access_log_format = "json"
close_spread = "2500ms"
[admin]
address = "127.0.0.1:9191"
token = "a$${{b\"c"
[session_store]
address = "127.0.0.1:6379"
username = "u"
password = "p"
tls = { verify = false, server_name = "redis.internal" }
[[listener]]
name = "public"
address = "*:8443"
upstream = "app"
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]
ready_path = "/ready"
[listener.tls]
cert = "a.pem"
key = "a.key"
min_version = "1.3"
[[listener.tls.certificates]]
cert = "b.pem"
key = "b.key"
names = ["*.example.com"]
[[upstream]]
name = "app"
balance = "two_choices"
engineio_paths = []
hash_keys = ["query:room", "ip"]
ring = "rendezvous"
balance_factor = 1.25
send_proxy_protocol = "v1"
tls = true
[upstream.sticky_cookie]
max_age = "1h"
[upstream.health]
type = "http"
path = "/health"
status = 204
failure_statuses = []
[[upstream.backend]]
name = "b1"
address = "localhost:3001"
weight = 5
)";

TEST(Dump, LoadsBackToTheSameConfiguration) {
  for (const std::string& text : {minimal(), std::string(kRich)}) {
    auto first = load_string(text, "t.toml");
    ASSERT_TRUE(first) << first.message();
    const std::string dumped = to_toml(*first);
    auto again = load_string(dumped, "t.toml");
    ASSERT_TRUE(again) << again.message() << "\n" << dumped;
    EXPECT_EQ(to_toml(*again), dumped);
  }
  const std::string dumped = to_toml(*load_string(kRich, "t.toml"));
  EXPECT_THAT(dumped, HasSubstr("token = \"a$${{b\\\"c\"\n"));
  EXPECT_THAT(dumped, HasSubstr("close_spread = \"2500ms\"\n"));
  EXPECT_THAT(dumped, HasSubstr("shutdown_timeout = \"10s\"\n"));  // a default, written out
  EXPECT_THAT(dumped, HasSubstr("balance_factor = 1.25\n"));
}

}  // namespace
}  // namespace limpet::config
