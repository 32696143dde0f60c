// The downstream HTTP/2 side of a client connection (RFC 9113, through nghttp2): every stream is
// an Exchange, routed, rewritten, limited and logged as an HTTP/1 request is; backends are spoken
// to in HTTP/1.1. Flow control is the backpressure both ways: a stream's receive window is given
// back only as its backend takes the body, and a response is read from the backend only while
// its stream's unsent bytes are under the relay's high-water mark, so a slow stream stalls
// nobody else. The connection window is given back at once (the per-stream windows bound what
// is buffered). nghttp2 validates the messaging (pseudo-headers, field syntax, content-length
// against DATA), limits CONTINUATION, SETTINGS and queued ACKs, and rate-limits resets (rapid
// reset, CVE-2023-44487). GOAWAY on shutdown or drain; open streams finish. Owning worker only.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "limpet/proxy/client_session.hpp"

namespace limpet::proxy {

class ClientConnection;
class Http2Stream;

class Http2Session final : public ClientSession {
 public:
  explicit Http2Session(ClientConnection& conn);
  ~Http2Session() override;
  Http2Session(const Http2Session&) = delete;
  Http2Session& operator=(const Http2Session&) = delete;

  // ClientSession
  void on_client_data(std::string_view data) override;
  void on_client_end(int status) override;
  void on_client_writable() override;
  DeadlineSpec deadline() const override;
  void on_deadline(Deadline kind) override;
  void begin_shutdown() override;  // tunnels get 1001, then GOAWAY
  void abort() override;
  void drain_tunnels_to(const std::vector<uint32_t>& backend_ids) override;
  void close_tunnels_cleanly(uint16_t code, uint64_t delay_ms) override;

  // Reused by every response head of the connection (nghttp2 copies the fields it is given).
  struct HeadScratch {
    std::string names;                                    // lower-cased field names
    std::vector<std::pair<size_t, std::string_view>> kept;  // offset in `names`, value
    std::vector<nghttp2_nv> fields;                       // [0]: :status
  };
  HeadScratch& head_scratch() { return head_scratch_; }

  // For its streams.
  ClientConnection& conn() { return conn_; }
  nghttp2_session* session() { return session_; }
  // Serializes what nghttp2 has queued into the client stream, as far as its queue takes it;
  // inside an nghttp2 call it only notes that a send is due (nghttp2 is not reentrant).
  void send();
  // The same once this loop turn's I/O callbacks have run (a uv_check): what every stream of the
  // connection answered in this turn leaves in one write, not a write per response.
  void send_soon();

 private:
  static int on_begin_headers_cb(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_header_cb(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                          const uint8_t* value, size_t valuelen, uint8_t flags, void* user);
  static int on_frame_recv_cb(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_data_chunk_recv_cb(nghttp2_session*, uint8_t flags, int32_t stream_id, const uint8_t* data,
                                   size_t len, void* user);
  static int on_frame_send_cb(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_stream_close_cb(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  Http2Stream* find(int32_t stream_id);
  // GOAWAY (NO_ERROR): the open streams finish, no new one starts.
  void go_away();
  // nghttp2 has nothing more to read or write: the connection closes once its bytes are out.
  void finish();

  ClientConnection& conn_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Http2Stream>> streams_;
  std::string wire_;  // one gathered write of frames
  HeadScratch head_scratch_;
  uv_check_t* flush_ = nullptr;  // send_soon(); freed in its close callback
  bool in_nghttp2_ = false;
  bool send_due_ = false;
  bool flush_scheduled_ = false;
  bool going_away_ = false;
  bool finished_ = false;
  bool served_one_ = false;  // a stream was opened: between streams is keep-alive now
};

}  // namespace limpet::proxy
