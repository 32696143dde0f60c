// AffinityTable: TTL refresh and expiry with an injected clock, eviction at the cap, session
// counters, consistency against a model, and concurrent use from 8 threads.
#include "limpet/balancer/affinity.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

namespace limpet::balancer {
namespace {

using std::chrono::milliseconds;

class AffinityTest : public ::testing::Test {
 protected:
  AffinityTest() : a_(registry_.get_or_create("a")), b_(registry_.get_or_create("b")) {}

  std::unique_ptr<AffinityTable> table(size_t max_entries) {
    return std::make_unique<AffinityTable>(registry_, max_entries, clock_);
  }

  BackendRegistry registry_;
  std::shared_ptr<BackendState> a_;
  std::shared_ptr<BackendState> b_;
  ManualClock clock_{1000000};  // the concurrency tests move it while workers read it: it is atomic
};

TEST_F(AffinityTest, LearnLookupForget) {
  auto t = table(0);
  EXPECT_EQ(t->lookup("s1", milliseconds(100)), std::nullopt);
  t->learn("s1", a_->id, milliseconds(100));
  t->learn("s2", b_->id, milliseconds(100));
  EXPECT_EQ(t->lookup("s1", milliseconds(100)), a_->id);
  EXPECT_EQ(t->lookup("s2", milliseconds(100)), b_->id);
  EXPECT_EQ(t->size(), 2u);
  EXPECT_EQ(a_->sessions.load(), 1);
  EXPECT_EQ(b_->sessions.load(), 1);
  EXPECT_TRUE(t->forget("s1"));
  EXPECT_FALSE(t->forget("s1"));
  EXPECT_EQ(t->lookup("s1", milliseconds(100)), std::nullopt);
  EXPECT_EQ(a_->sessions.load(), 0);
  t->learn("", a_->id, milliseconds(100));  // ignored
  EXPECT_EQ(t->size(), 1u);
  auto st = t->stats();
  EXPECT_EQ(st.entries, 1u);
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.misses, 2u);
  EXPECT_EQ(st.learned, 2u);
  EXPECT_EQ(st.forgotten, 1u);
}

TEST_F(AffinityTest, RelearnRepointsSessionCounts) {
  auto t = table(0);
  t->learn("s", a_->id, milliseconds(100));
  t->learn("s", a_->id, milliseconds(100));  // renewal: still one session
  EXPECT_EQ(a_->sessions.load(), 1);
  t->learn("s", b_->id, milliseconds(100));
  EXPECT_EQ(a_->sessions.load(), 0);
  EXPECT_EQ(b_->sessions.load(), 1);
  EXPECT_EQ(t->lookup("s", milliseconds(100)), b_->id);
  EXPECT_FALSE(t->forget_if("s", a_->id));  // re-pointed meanwhile: leave it
  EXPECT_EQ(t->size(), 1u);
  EXPECT_TRUE(t->forget_if("s", b_->id));
  EXPECT_EQ(b_->sessions.load(), 0);
}

TEST_F(AffinityTest, LookupRefreshesDeadline) {
  auto t = table(0);
  t->learn("s", a_->id, milliseconds(1000));
  clock_.advance(900);
  EXPECT_EQ(t->lookup("s", milliseconds(1000)), a_->id);  // deadline now +1000 from here
  clock_.advance(900);
  EXPECT_EQ(t->lookup("s", milliseconds(1000)), a_->id);
  clock_.advance(999);
  EXPECT_EQ(t->expire(), 0u);
  clock_.advance(1);
  EXPECT_EQ(t->lookup("s", milliseconds(1000)), std::nullopt);  // exactly at the deadline
  auto st = t->stats();
  EXPECT_EQ(st.expirations, 1u);
  EXPECT_EQ(st.entries, 0u);
  EXPECT_EQ(a_->sessions.load(), 0);
}

TEST_F(AffinityTest, ExpireSweepsOnlyPastDeadlines) {
  auto t = table(0);
  for (int i = 0; i < 1000; ++i) {
    t->learn("short-" + std::to_string(i), a_->id, milliseconds(100));
    t->learn("long-" + std::to_string(i), b_->id, milliseconds(10000));
  }
  clock_.advance(100);
  EXPECT_EQ(t->expire(), 1000u);
  EXPECT_EQ(t->size(), 1000u);
  EXPECT_EQ(a_->sessions.load(), 0);
  EXPECT_EQ(b_->sessions.load(), 1000);
  EXPECT_EQ(t->stats().expirations, 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(t->lookup("long-" + std::to_string(i), milliseconds(1)), b_->id);
}

TEST_F(AffinityTest, ExpireSomeIsIncrementalAndEventuallyComplete) {
  auto t = table(0);
  for (int i = 0; i < 5000; ++i) t->learn("s" + std::to_string(i), a_->id, milliseconds(10));
  for (int i = 0; i < 5000; i += 2) t->learn("s" + std::to_string(i), a_->id, milliseconds(100000));
  clock_.advance(10);
  size_t removed = 0;
  int calls = 0;
  while (removed < 2500 && calls < 1000) {
    const size_t r = t->expire_some(64);
    EXPECT_LE(r, 64u);
    removed += r;
    ++calls;
  }
  EXPECT_EQ(removed, 2500u);
  EXPECT_GT(calls, 2500 / 64);
  EXPECT_EQ(t->size(), 2500u);
  EXPECT_EQ(a_->sessions.load(), 2500);
  EXPECT_EQ(t->expire_some(100000), 0u);
  EXPECT_EQ(AffinityTable(registry_, 0).expire_some(10), 0u);  // empty table returns at once
}

TEST_F(AffinityTest, CapEvictsAndCounts) {
  auto t = table(10);
  EXPECT_EQ(t->shards(), 1u);  // small caps are exact
  for (int i = 0; i < 10; ++i) t->learn("s" + std::to_string(i), a_->id, milliseconds(1000));
  t->learn("s10", b_->id, milliseconds(1000));
  EXPECT_EQ(t->size(), 10u);
  EXPECT_EQ(t->stats().evictions, 1u);
  EXPECT_EQ(a_->sessions.load() + b_->sessions.load(), 10);
  EXPECT_EQ(t->lookup("s10", milliseconds(1000)), b_->id);  // the newcomer stays
  t->learn("s5", b_->id, milliseconds(1000));                // existing key or not: never above the cap
  EXPECT_EQ(t->size(), 10u);
}

// Eviction samples and takes the earliest deadline: mostly the oldest sessions go first.
TEST_F(AffinityTest, EvictionPrefersEarliestDeadlines) {
  auto t = table(200);
  for (int i = 0; i < 200; ++i) {
    t->learn("old" + std::to_string(i), a_->id, milliseconds(100000));
    clock_.advance(1);
  }
  for (int i = 0; i < 100; ++i) {
    t->learn("new" + std::to_string(i), b_->id, milliseconds(100000));
    clock_.advance(1);
  }
  EXPECT_EQ(t->stats().evictions, 100u);
  int oldest_evicted = 0;
  for (int i = 0; i < 100; ++i) {
    if (!t->lookup("old" + std::to_string(i), milliseconds(100000))) ++oldest_evicted;
  }
  EXPECT_GE(oldest_evicted, 75);
  int new_kept = 0;
  for (int i = 0; i < 100; ++i) {
    if (t->lookup("new" + std::to_string(i), milliseconds(100000))) ++new_kept;
  }
  EXPECT_GE(new_kept, 95);
}

TEST_F(AffinityTest, EvictingAnExpiredEntryCountsAsExpiration) {
  auto t = table(2);
  t->learn("x", a_->id, milliseconds(10));
  t->learn("y", a_->id, milliseconds(10));
  clock_.advance(20);
  t->learn("z", b_->id, milliseconds(10));
  auto st = t->stats();
  EXPECT_EQ(st.evictions, 0u);
  EXPECT_EQ(st.expirations, 1u);
}

TEST_F(AffinityTest, LongSidsAndClear) {
  auto t = table(0);
  const std::string s24(24, 'x');
  const std::string s25(25, 'y');
  const std::string s128(128, 'z');
  t->learn(s24, a_->id, milliseconds(100));
  t->learn(s25, a_->id, milliseconds(100));
  t->learn(s128, b_->id, milliseconds(100));
  EXPECT_EQ(t->lookup(s24, milliseconds(100)), a_->id);
  EXPECT_EQ(t->lookup(s25, milliseconds(100)), a_->id);
  EXPECT_EQ(t->lookup(s128, milliseconds(100)), b_->id);
  EXPECT_EQ(t->lookup(std::string(25, 'x'), milliseconds(100)), std::nullopt);
  EXPECT_GT(t->memory_bytes(), 0u);
  t->clear();
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(a_->sessions.load(), 0);
  EXPECT_EQ(b_->sessions.load(), 0);
}

TEST_F(AffinityTest, DestructionReleasesSessionCounts) {
  {
    auto t = table(0);
    for (int i = 0; i < 100; ++i) t->learn("s" + std::to_string(i), a_->id, milliseconds(100));
    EXPECT_EQ(a_->sessions.load(), 100);
  }
  EXPECT_EQ(a_->sessions.load(), 0);
}

TEST_F(AffinityTest, UnparsableHandshakesCounted) {
  auto t = table(0);
  t->note_unparsable_handshake();
  t->note_unparsable_handshake();
  EXPECT_EQ(t->stats().unparsable_handshakes, 2u);
}

// Random operations against a std::map model: exercises index growth, backward-shift deletion
// and the swap-with-last removal across many collisions.
TEST_F(AffinityTest, MatchesModelUnderRandomOperations) {
  auto t = table(0);
  std::map<std::string, uint32_t> model;
  std::mt19937_64 rng(11);
  for (int op = 0; op < 200000; ++op) {
    const std::string key = "k" + std::to_string(rng() % 5000) + (rng() % 7 == 0 ? std::string(30, 'L') : "");
    const uint32_t id = rng() % 2 == 0 ? a_->id : b_->id;
    switch (rng() % 4) {
      case 0:
      case 1:
        t->learn(key, id, milliseconds(1000000));
        model[key] = id;
        break;
      case 2: {
        auto got = t->lookup(key, milliseconds(1000000));
        auto it = model.find(key);
        ASSERT_EQ(got.has_value(), it != model.end()) << key;
        if (got) {
          ASSERT_EQ(*got, it->second);
        }
        break;
      }
      case 3:
        ASSERT_EQ(t->forget(key), model.erase(key) == 1) << key;
        break;
    }
  }
  ASSERT_EQ(t->size(), model.size());
  int64_t on_a = 0;
  for (const auto& [k, id] : model) {
    ASSERT_EQ(t->lookup(k, milliseconds(1)), id);
    on_a += id == a_->id;
  }
  EXPECT_EQ(a_->sessions.load(), on_a);
  EXPECT_EQ(b_->sessions.load(), static_cast<int64_t>(model.size()) - on_a);
}

TEST_F(AffinityTest, ConcurrentLearnLookupForgetStayConsistent) {
  auto t = table(0);
  constexpr int kThreads = 8;
  constexpr int kOps = 40000;
  // Each thread owns a key range for learn/forget (so the final contents are known exactly)
  // and looks up keys of every range (so shards are shared).
  std::vector<std::thread> threads;
  std::atomic<uint64_t> lookups{0};
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&, th] {
      std::mt19937_64 rng(static_cast<uint64_t>(th));
      for (int i = 0; i < kOps; ++i) {
        const int k = static_cast<int>(rng() % 2000);
        const std::string own = "t" + std::to_string(th) + "-" + std::to_string(k);
        switch (rng() % 3) {
          case 0:
            t->learn(own, (k % 2) ? a_->id : b_->id, milliseconds(1000000));
            break;
          case 1:
            t->forget(own);
            break;
          case 2:
            t->lookup("t" + std::to_string(rng() % kThreads) + "-" + std::to_string(k), milliseconds(1000000));
            lookups.fetch_add(1);
            break;
        }
      }
      // Finish with a known state: even keys present, odd keys absent.
      for (int k = 0; k < 2000; ++k) {
        const std::string own = "t" + std::to_string(th) + "-" + std::to_string(k);
        if (k % 2 == 0) {
          t->learn(own, b_->id, milliseconds(1000000));
        } else {
          t->forget(own);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(t->size(), static_cast<size_t>(kThreads * 1000));
  EXPECT_EQ(a_->sessions.load(), 0);
  EXPECT_EQ(b_->sessions.load(), kThreads * 1000);
  auto st = t->stats();
  EXPECT_EQ(st.entries, static_cast<uint64_t>(kThreads * 1000));
  EXPECT_EQ(st.hits + st.misses, lookups.load());
  for (int th = 0; th < kThreads; ++th) {
    ASSERT_EQ(t->lookup("t" + std::to_string(th) + "-0", milliseconds(1)), b_->id);
    ASSERT_EQ(t->lookup("t" + std::to_string(th) + "-1", milliseconds(1)), std::nullopt);
  }
}

TEST_F(AffinityTest, ConcurrentExpiryWhileWorkersLearn) {
  auto t = table(5000);  // a cap, so evictions race with everything else too
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int th = 0; th < 8; ++th) {
    threads.emplace_back([&, th] {
      std::mt19937_64 rng(static_cast<uint64_t>(100 + th));
      for (int i = 0; i < 30000; ++i) {
        const std::string k = "s" + std::to_string(rng() % 20000);
        if (rng() % 2) {
          t->learn(k, (i % 2) ? a_->id : b_->id, milliseconds(rng() % 50));
        } else {
          t->lookup(k, milliseconds(rng() % 50));
        }
        if (i % 1000 == 0) clock_.advance(7);
      }
    });
  }
  std::thread sweeper([&] {
    while (!stop.load()) t->expire_some(256);
  });
  for (auto& th : threads) th.join();
  stop = true;
  sweeper.join();
  EXPECT_LE(t->size(), 5000u);
  EXPECT_EQ(static_cast<int64_t>(t->size()), a_->sessions.load() + b_->sessions.load());
  clock_.advance(1000);
  t->expire();
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(a_->sessions.load(), 0);
  EXPECT_EQ(b_->sessions.load(), 0);
}

TEST(BackendRegistry, IdsStableAndFindLockFree) {
  BackendRegistry r;
  auto x = r.get_or_create("x");
  auto y = r.get_or_create("y");
  EXPECT_NE(x->id, y->id);
  EXPECT_EQ(r.get_or_create("x"), x);
  EXPECT_EQ(r.find(x->id), x.get());
  EXPECT_EQ(r.by_id(y->id), y);
  EXPECT_EQ(r.find(999999), nullptr);
  EXPECT_EQ(r.by_id(0), nullptr);
  for (int i = 0; i < 3000; ++i) r.get_or_create("n" + std::to_string(i));  // crosses chunks
  auto last = r.get_or_create("n2999");
  EXPECT_EQ(r.find(last->id), last.get());
}

}  // namespace
}  // namespace limpet::balancer
