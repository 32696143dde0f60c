// man/limpet.toml.5 documents every key the loader accepts, and only those. The keys come from
// config::known_keys(), which records the loader's own reads, so this cannot drift from the code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "limpet/config/schema.hpp"

namespace limpet::config {
namespace {

// A .SH or .SS section of the page: its heading and the keys its .TP entries are tagged with.
struct Section {
  std::string heading;
  std::vector<std::string> tags;
};

std::vector<std::string> page_lines() {
  const char* root = std::getenv("LIMPET_SOURCE_ROOT");
  const std::string path = std::string(root != nullptr ? root : ".") + "/man/limpet.toml.5";
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path << " (set LIMPET_SOURCE_ROOT)";
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<Section> sections(const std::vector<std::string>& lines) {
  static const std::regex kHeading(R"re(^\.S[HS]\s+"?([^"]*)"?\s*$)re");
  // The line after .TP: ".B workers", ".BR tls ...", ".BI name ...".
  static const std::regex kTag(R"re(^\.B[IR]?\s+"?([a-z_][a-z0-9_]*)\b)re");
  std::vector<Section> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::smatch m;
    if (std::regex_match(lines[i], m, kHeading)) {
      out.push_back({m[1].str(), {}});
    } else if (lines[i] == ".TP" && i + 1 < lines.size() && !out.empty() &&
               std::regex_search(lines[i + 1], m, kTag)) {
      out.back().tags.push_back(m[1].str());
    }
  }
  return out;
}

// The section about table `path` ("listener.tls"): its heading is "[listener.tls]" or
// "[[listener.tls]]".
const Section* section_of(const std::vector<Section>& all, const std::string& path) {
  for (const auto& s : all) {
    if (s.heading == "[" + path + "]" || s.heading == "[[" + path + "]]") return &s;
  }
  return nullptr;
}

class ManKeys : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = known_keys();
    ASSERT_TRUE(loaded) << loaded.message();
    keys_ = *loaded;
    for (const auto& k : keys_) {
      const size_t dot = k.rfind('.');
      if (dot != std::string::npos) tables_.insert(k.substr(0, dot));
    }
    sections_ = sections(page_lines());
  }

  std::vector<std::string> keys_;
  std::set<std::string> tables_;  // keys that hold keys of their own
  std::vector<Section> sections_;
};

TEST_F(ManKeys, KnownKeysCoverEveryTable) {
  for (const char* k : {"server.workers", "admin.token", "listener.address", "listener.tls.cert",
                        "listener.tls.certificates.names", "upstream.hash_keys", "upstream.sticky_cookie.max_age",
                        "upstream.health.status", "upstream.tls.verify", "upstream.backend.weight"}) {
    EXPECT_THAT(keys_, ::testing::Contains(k));
  }
}

// Every table has its own section, and every key an entry in its table's section.
TEST_F(ManKeys, EveryKeyIsDocumented) {
  for (const auto& key : keys_) {
    if (tables_.count(key) != 0) {
      EXPECT_NE(section_of(sections_, key), nullptr)
          << "man/limpet.toml.5: no section .SH/.SS \"[" << key << "]\" (or \"[[" << key << "]]\")";
    }
    const size_t dot = key.rfind('.');
    if (dot == std::string::npos) continue;  // a top-level table: its section is its entry
    const std::string table = key.substr(0, dot);
    const std::string leaf = key.substr(dot + 1);
    const Section* s = section_of(sections_, table);
    if (s == nullptr) continue;  // reported above, for the table
    EXPECT_THAT(s->tags, ::testing::Contains(leaf))
        << "man/limpet.toml.5: section \"" << s->heading << "\" has no .TP entry for " << leaf;
  }
}

// And nothing else: an entry in a table's section is a key the loader reads.
TEST_F(ManKeys, EveryDocumentedKeyExists) {
  for (const auto& s : sections_) {
    if (!s.heading.starts_with("[")) continue;
    const std::string table = s.heading.substr(s.heading.find_first_not_of('['),
                                               s.heading.find(']') - s.heading.find_first_not_of('['));
    for (const auto& tag : s.tags) {
      EXPECT_THAT(keys_, ::testing::Contains(table + "." + tag))
          << "man/limpet.toml.5: section \"" << s.heading << "\" documents " << tag
          << ", which the loader does not read";
    }
  }
}

}  // namespace
}  // namespace limpet::config
