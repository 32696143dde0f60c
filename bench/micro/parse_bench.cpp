// Micro benchmarks of limpet's per-request work in the http layer: parse a request head with the
// strict llhttp Parser, rewrite it for the backend (build_request_head), parse the backend's
// response head and rebuild it for the client, plus the WebSocket FrameTracker on a stream of
// small frames. Single-threaded, no I/O: what one worker spends per request before any syscall.
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>

#include "limpet/http/parser.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/http/websocket.hpp"

namespace {

using limpet::http::Parser;

// What wrk sends, and what a Socket.IO polling client sends (a realistic, larger head).
constexpr std::string_view kSmallRequest = "GET / HTTP/1.1\r\nHost: 127.0.0.1:18610\r\n\r\n";
constexpr std::string_view kBrowserRequest =
    "GET /socket.io/?EIO=4&transport=polling&t=PXq3K2a&sid=Jf1zW8cQm2x9AbCdEfGh HTTP/1.1\r\n"
    "Host: chat.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: */*\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Referer: https://chat.example.com/room/42\r\n"
    "Cookie: io=Jf1zW8cQm2x9AbCdEfGh; theme=dark; limpet_backend=b2\r\n"
    "Connection: keep-alive\r\n"
    "Sec-Fetch-Dest: empty\r\n"
    "Sec-Fetch-Mode: cors\r\n"
    "Sec-Fetch-Site: same-origin\r\n"
    "\r\n";
constexpr std::string_view kResponse =
    "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\n"
    "Hello, world\n";

class Sink : public limpet::http::ParserDelegate {
 public:
  bool on_head() override { return false; }
  bool on_body(std::string_view data) override {
    body_ += data.size();
    return true;
  }
  void on_message_end() override { ++messages_; }
  size_t messages() const { return messages_; }

 private:
  size_t body_ = 0;
  size_t messages_ = 0;
};

// One keep-alive connection's parser reused for every request, as ClientConnection does.
void parse_loop(benchmark::State& state, std::string_view request, bool rewrite) {
  Sink sink;
  Parser parser(Parser::Kind::kRequest, {}, &sink);
  std::string out;
  limpet::http::ForwardInfo info;
  info.client_ip = "127.0.0.1";
  for (auto _ : state) {
    auto r = parser.execute(request);
    if (r.state != Parser::State::kPaused) state.SkipWithError("request did not parse");
    if (rewrite) {
      limpet::http::build_request_head(parser.request(), info, &out);
      benchmark::DoNotOptimize(out.data());
    }
    parser.resume();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request.size()));
}

void BM_ParseRequestSmall(benchmark::State& state) { parse_loop(state, kSmallRequest, false); }
void BM_ParseRequestBrowser(benchmark::State& state) { parse_loop(state, kBrowserRequest, false); }
void BM_ParseRewriteRequestSmall(benchmark::State& state) { parse_loop(state, kSmallRequest, true); }
void BM_ParseRewriteRequestBrowser(benchmark::State& state) { parse_loop(state, kBrowserRequest, true); }

void BM_ParseRewriteResponse(benchmark::State& state) {
  Sink sink;
  Parser parser(Parser::Kind::kResponse, {}, &sink);
  std::string out;
  limpet::http::ResponseHeadOptions options;
  options.framing = limpet::http::BodyFraming::kLength;
  for (auto _ : state) {
    auto r = parser.execute(kResponse);
    if (r.state != Parser::State::kPaused) state.SkipWithError("response did not parse");
    limpet::http::build_response_head(parser.response(), options, &out);
    benchmark::DoNotOptimize(out.data());
    parser.resume();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// A tunnel's per-chunk cost: frame boundaries of 64 KB of 32-byte masked binary frames.
void BM_FrameTrackerSmallFrames(benchmark::State& state) {
  std::string frame = {static_cast<char>(0x82), static_cast<char>(0x80 | 32), 1, 2, 3, 4};
  frame.append(32, 'x');
  std::string chunk;
  while (chunk.size() + frame.size() <= 64 * 1024) chunk += frame;
  limpet::http::websocket::FrameTracker tracker;
  for (auto _ : state) benchmark::DoNotOptimize(tracker.feed(chunk));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * (chunk.size() / frame.size())));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * chunk.size()));
}

BENCHMARK(BM_ParseRequestSmall);
BENCHMARK(BM_ParseRequestBrowser);
BENCHMARK(BM_ParseRewriteRequestSmall);
BENCHMARK(BM_ParseRewriteRequestBrowser);
BENCHMARK(BM_ParseRewriteResponse);
BENCHMARK(BM_FrameTrackerSmallFrames);

}  // namespace

BENCHMARK_MAIN();
