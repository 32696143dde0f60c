// Relay: the only start/stop-reading decision of one direction, and whom that direction waits on.
// A real source stream and a real sink stream (net::Stream, accepted on 127.0.0.1), each with a
// raw libuv peer: one that writes, one that reads or stops reading.
#include "limpet/proxy/relay.hpp"

#include <gtest/gtest.h>

#include "harness.hpp"

namespace limpet::proxy::testing {
namespace {

using Waiting = Relay::Waiting;
constexpr size_t kHigh = net::OutQueue::kHighWater;
constexpr size_t kLow = net::OutQueue::kLowWater;

class RelayTest : public LoopTest, public net::StreamDelegate {
 protected:
  void SetUp() override {
    LoopTest::SetUp();
    acceptor_.delegate = this;
    // One at a time, so that the first stream is the source's and the second the sink's.
    source_peer_ = &net_.conn();
    source_peer_->connect(acceptor_.port());
    ASSERT_TRUE(run_until([&] { return acceptor_.streams.size() == 1 && source_peer_->connect_status == 0; }));
    sink_peer_ = &net_.conn();
    sink_peer_->connect(acceptor_.port());
    ASSERT_TRUE(run_until([&] { return acceptor_.streams.size() == 2 && sink_peer_->connect_status == 0; }));
    source_ = acceptor_.streams[0];
    sink_ = acceptor_.streams[1];
    // The relay decides about the source from here on; the sink's own input is not in the test.
    source_->stop_reading();
    sink_->stop_reading();
    relay_ = Relay(source_, sink_);
  }

  void release() override {
    relay_ = Relay();
    for (net::Stream* s : acceptor_.streams) s->close();
    acceptor_.close();
  }

  void on_data(net::Stream* s, std::string_view data) override {
    if (s != source_) return;
    relay_.write(data);
    if (!source_->reading() && !stopped_once_) {
      stopped_once_ = true;
      pending_when_stopped_ = sink_->out().pending();
    }
  }
  void on_end(net::Stream* s, int) override {
    if (s == source_) relay_.source_ended();
  }
  void on_writable(net::Stream* s) override {
    if (s != sink_) return;
    const bool was_reading = source_->reading();
    relay_.update();
    if (!was_reading && source_->reading()) {
      ++resumes_;
      if (resumes_ == 1) {
        pending_when_resumed_ = sink_->out().pending();
        waiting_when_resumed_ = relay_.waiting();
      }
    }
  }
  void on_closed(net::Stream*) override {}
  void on_timeout(net::Stream*) override {}

  // Writes to the sink until it is above its high-water mark (its peer reads nothing).
  void fill_sink() {
    std::string chunk(1 << 20, 'f');
    for (int i = 0; i < 128 && !sink_->out().above_high_water(); ++i) relay_.write(chunk);
    ASSERT_TRUE(sink_->out().above_high_water());
  }

  void TearDown() override {
    LoopTest::TearDown();
    EXPECT_EQ(buffers_.outstanding(), 0u);
  }

  BufferPool buffers_;  // no worker here: the streams borrow from the test's pool
  StreamAcceptor acceptor_{&loop_, &buffers_};
  RawConn* source_peer_ = nullptr;
  RawConn* sink_peer_ = nullptr;
  net::Stream* source_ = nullptr;
  net::Stream* sink_ = nullptr;
  Relay relay_;
  bool stopped_once_ = false;
  size_t pending_when_stopped_ = 0;
  size_t pending_when_resumed_ = 0;
  Waiting waiting_when_resumed_ = Waiting::kNobody;
  int resumes_ = 0;
};

TEST_F(RelayTest, StopsAboveHighWaterAndResumesUnderLowWater) {
  constexpr uint64_t kTotal = 48ull << 20;
  relay_.update();
  EXPECT_TRUE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kSource);

  sink_peer_->stop_reading();  // the sink's peer reads nothing: its queue has to grow
  sink_peer_->accumulate = false;
  source_peer_->pump(kTotal, 8 << 20);
  ASSERT_TRUE(run_until([&] { return stopped_once_; }, 10000)) << "the source was never stopped";
  EXPECT_GT(pending_when_stopped_, kHigh);  // stopped by the write that crossed the mark, not before
  EXPECT_FALSE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kSink);

  uint64_t received = 0;
  bool in_order = true;
  sink_peer_->on_data = [&](RawConn&, std::string_view d) {
    if (pattern_mismatch(d, received) != std::string_view::npos) in_order = false;
    received += d.size();
  };
  sink_peer_->start_reading();
  ASSERT_TRUE(run_until([&] { return resumes_ > 0; })) << "the source was never resumed";
  EXPECT_LE(pending_when_resumed_, kLow);
  EXPECT_EQ(waiting_when_resumed_, Waiting::kSource);

  ASSERT_TRUE(run_until([&] { return received == kTotal; }, 20000)) << received << " of " << kTotal;
  EXPECT_TRUE(in_order);
  EXPECT_TRUE(sink_->out().drained());
  EXPECT_EQ(relay_.waiting(), Waiting::kSource);
  EXPECT_TRUE(source_->reading());
}

TEST_F(RelayTest, HoldStopsReadingAndReleaseResumes) {
  relay_.update();
  ASSERT_TRUE(source_->reading());
  relay_.hold(true);
  EXPECT_FALSE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kNobody);
  relay_.update();  // held is held, whatever else is asked
  EXPECT_FALSE(source_->reading());
  relay_.hold(false);
  EXPECT_TRUE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kSource);
}

TEST_F(RelayTest, SourceEndedStopsReadingForGood) {
  relay_.update();
  source_peer_->write("last");
  source_peer_->shutdown();
  ASSERT_TRUE(run_until([&] { return relay_.ended(); }));
  EXPECT_FALSE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kNobody);
  relay_.hold(false);
  relay_.update();
  EXPECT_FALSE(source_->reading());
  sink_peer_->start_reading();
  ASSERT_TRUE(run_until([&] { return sink_peer_->in == "last"; }));
}

// A full sink is waited on whatever the source does: it is the sink's peer that has to read.
TEST_F(RelayTest, WaitsOnTheSinkWhileItIsFullEvenWhenTheSourceEndedOrIsHeld) {
  sink_peer_->stop_reading();
  relay_.update();
  fill_sink();
  EXPECT_FALSE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kSink);
  relay_.hold(true);
  EXPECT_EQ(relay_.waiting(), Waiting::kSink);
  relay_.source_ended();
  EXPECT_EQ(relay_.waiting(), Waiting::kSink);

  sink_peer_->accumulate = false;
  sink_peer_->start_reading();
  ASSERT_TRUE(run_until([&] { return sink_->out().drained(); }, 10000));
  EXPECT_EQ(relay_.waiting(), Waiting::kNobody);
  EXPECT_FALSE(source_->reading());
}

// The sink may change: pointing the relay at a full sink stops the source at once, at no sink
// (a request body that ended) the source is read again.
TEST_F(RelayTest, ChangingTheSinkRedecides) {
  sink_peer_->stop_reading();
  relay_.update();
  fill_sink();
  relay_.set_sink(nullptr);
  EXPECT_TRUE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kSource);
  relay_.set_sink(sink_);
  EXPECT_FALSE(source_->reading());
  EXPECT_EQ(relay_.waiting(), Waiting::kSink);
  sink_peer_->accumulate = false;
  sink_peer_->start_reading();
  ASSERT_TRUE(run_until([&] { return source_->reading(); }, 10000));
}

}  // namespace
}  // namespace limpet::proxy::testing
