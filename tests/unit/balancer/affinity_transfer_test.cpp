// affinity_transfer: the upgrade hand-over format. Round trip with remaining deadlines on an
// injected clock, backends matched by name (other ids, one missing), the receiving table's own
// entries win, refusals of truncated, foreign and newer-version input; the learn observer.
#include "limpet/balancer/affinity_transfer.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace limpet::balancer {
namespace {

using std::chrono::milliseconds;
namespace xfer = affinity_transfer;

struct Side {
  explicit Side(int64_t start_ms) : clock(start_ms) {}
  ManualClock clock;
  BackendRegistry registry;
  AffinityTable table{registry, 0, clock};
  xfer::ResolveBackend resolver(std::vector<std::string> configured) {
    return [this, configured](std::string_view name) -> std::optional<uint32_t> {
      for (const auto& c : configured) {
        if (c == name) return registry.get_or_create(c)->id;
      }
      return std::nullopt;
    };
  }
};

TEST(AffinityTransfer, RoundTripKeepsBackendsByNameAndTimeLeft) {
  Side old_side(5'000'000), new_side(77);
  new_side.registry.get_or_create("padding");  // different ids in the new process
  auto a = old_side.registry.get_or_create("a");
  auto b = old_side.registry.get_or_create("b");
  auto gone = old_side.registry.get_or_create("gone");
  old_side.table.learn("sid-a", a->id, milliseconds(60'000));
  old_side.table.learn(std::string(40, 'L'), b->id, milliseconds(60'000));  // a heap-stored sid
  old_side.table.learn("sid-store", b->id, milliseconds(60'000), AffinityTable::Origin::kStore);
  old_side.table.learn("sid-gone", gone->id, milliseconds(60'000));
  old_side.table.learn("sid-expired", a->id, milliseconds(10));
  old_side.clock.advance(1'000);

  std::string bytes = xfer::encode_table(old_side.table, old_side.registry);
  auto stats = xfer::decode_into(bytes, new_side.table, new_side.resolver({"a", "b"}));
  ASSERT_TRUE(stats) << stats.message();
  EXPECT_EQ(stats->imported, 3u);
  EXPECT_EQ(stats->unknown_backend, 1u);  // "gone" is not configured any more
  EXPECT_EQ(stats->already_known, 0u);

  const uint32_t new_a = new_side.registry.get_or_create("a")->id;
  const uint32_t new_b = new_side.registry.get_or_create("b")->id;
  EXPECT_NE(new_a, a->id);
  bool refresh = false;
  EXPECT_EQ(new_side.table.lookup("sid-store", milliseconds(59'000), &refresh), new_b);
  EXPECT_EQ(new_side.registry.get_or_create("b")->shared_sessions.load(), 1);  // origin kept
  EXPECT_EQ(new_side.registry.get_or_create("a")->sessions.load(), 1);
  // 59 s were left: just before they pass the session is known, just after it is not.
  new_side.clock.advance(58'990);
  EXPECT_EQ(new_side.table.lookup(std::string(40, 'L'), milliseconds(60'000)), new_b);
  new_side.clock.advance(20);
  EXPECT_EQ(new_side.table.lookup("sid-a", milliseconds(60'000)), std::nullopt);
  EXPECT_EQ(new_side.table.lookup("sid-expired", milliseconds(60'000)), std::nullopt);
}

TEST(AffinityTransfer, ReceiversOwnEntryWins) {
  Side old_side(1000), new_side(1000);
  old_side.table.learn("s", old_side.registry.get_or_create("a")->id, milliseconds(5000));
  new_side.table.learn("s", new_side.registry.get_or_create("b")->id, milliseconds(5000));
  auto stats = xfer::decode_into(xfer::encode_table(old_side.table, old_side.registry), new_side.table,
                                 new_side.resolver({"a", "b"}));
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->already_known, 1u);
  EXPECT_EQ(new_side.table.lookup("s", milliseconds(1)), new_side.registry.get_or_create("b")->id);
}

TEST(AffinityTransfer, RecordsUseTheSameFormat) {
  Side new_side(0);
  std::vector<xfer::Record> records = {{"x", "a", milliseconds(500), AffinityTable::Origin::kLocal},
                                       {"y", "a", milliseconds(500), AffinityTable::Origin::kLocal},
                                       {"z", "c", milliseconds(500), AffinityTable::Origin::kLocal}};
  auto stats = xfer::decode_into(xfer::encode_records(records), new_side.table, new_side.resolver({"a"}));
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->imported, 2u);
  EXPECT_EQ(stats->unknown_backend, 1u);
  EXPECT_EQ(xfer::decode_into(xfer::encode_records({}), new_side.table, new_side.resolver({}))->imported, 0u);
}

TEST(AffinityTransfer, RefusesMalformedInputAndImportsNothing) {
  Side side(0);
  std::string good = xfer::encode_records({{"x", "a", milliseconds(500), AffinityTable::Origin::kLocal},
                                           {"y", "a", milliseconds(500), AffinityTable::Origin::kLocal}});
  auto resolve = side.resolver({"a"});
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(xfer::decode_into(std::string_view(good).substr(0, cut), side.table, resolve)) << cut;
  }
  EXPECT_FALSE(xfer::decode_into(good + "x", side.table, resolve));
  std::string newer = good;
  newer[8] = static_cast<char>(xfer::kVersion + 1);
  auto refused = xfer::decode_into(newer, side.table, resolve);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.message().find("version"), std::string::npos) << refused.message();
  std::string foreign = good;
  foreign[0] = 'X';
  EXPECT_FALSE(xfer::decode_into(foreign, side.table, resolve));
  EXPECT_EQ(side.table.size(), 0u);
}

struct CountingObserver : AffinityTable::LearnObserver {
  void on_learn(std::string_view sid, uint32_t, milliseconds ttl, AffinityTable::Origin) override {
    seen.emplace_back(sid);
    last_ttl = ttl;
  }
  std::vector<std::string> seen;
  milliseconds last_ttl{0};
};

TEST(AffinityTransfer, LearnObserverSeesEveryLearnUntilRemoved) {
  Side side(0);
  CountingObserver observer;
  const uint32_t a = side.registry.get_or_create("a")->id;
  side.table.learn("before", a, milliseconds(100));
  side.table.set_learn_observer(&observer);
  side.table.learn("new", a, milliseconds(100));
  side.table.learn("new", a, milliseconds(250));  // a renewal is a learn too
  side.table.restore("restored", a, milliseconds(100), AffinityTable::Origin::kLocal);  // not a learn
  side.table.set_learn_observer(nullptr);
  side.table.learn("after", a, milliseconds(100));
  EXPECT_EQ(observer.seen, (std::vector<std::string>{"new", "new"}));
  EXPECT_EQ(observer.last_ttl, milliseconds(250));
}

}  // namespace
}  // namespace limpet::balancer
