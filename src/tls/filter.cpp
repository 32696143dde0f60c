#include "limpet/tls/filter.hpp"

#include <openssl/err.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "limpet/util/log.hpp"
#include "openssl.hpp"

namespace limpet::tls {
namespace {

// Plaintext is read one maximum-size TLS record at a time.
constexpr size_t kReadStep = 16 * 1024;
// Bytes a record adds to its plaintext, at most: header 5, then TLS 1.3 content type 1 + AEAD tag
// 16, or TLS 1.2 GCM explicit nonce 8 + tag 16.
constexpr size_t kRecordOverhead = 5 + 8 + 16;

// What nginx does with plain HTTP on an HTTPS port: answer in plain HTTP, so that the person at
// the browser or curl sees the mistake instead of a reset.
const std::string& plain_http_response() {
  static const std::string response = [] {
    const std::string body = "This port speaks HTTPS: use https:// to reach it.\n";
    return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
  }();
  return response;
}

void count(Counters* counters, std::atomic<uint64_t> Counters::*which) {
  if (counters != nullptr) (counters->*which).fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

// The buffers of one call, visible to the BIO for its duration only.
class Filter::Io {
 public:
  Io(Filter* filter, std::string_view in, std::string* out) : filter_(filter) {
    filter_->in_ = in;
    filter_->out_ = out;
  }
  ~Io() {
    filter_->in_ = {};
    filter_->out_ = nullptr;
  }
  Io(const Io&) = delete;
  Io& operator=(const Io&) = delete;

 private:
  Filter* filter_;
};

Filter::Filter(SSL* ssl, Role role, std::shared_ptr<const void> owner, Counters* counters, std::string peer)
    : ssl_(ssl), role_(role), owner_(std::move(owner)), counters_(counters), peer_(std::move(peer)) {
  if (ssl_ == nullptr) return;
  BIO* bio = BIO_new(bio_method());
  if (bio == nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
    return;
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: SSL_free frees it once
  if (role_ == Role::kServer) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
}

Filter::~Filter() {
  // A client that connects and leaves without a byte is a port probe or a health check, not a
  // handshake; one that sent part of a handshake and went quiet is what header_timeout ends.
  if (started_ && !handshake_done_ && !failed_ && (wire_bytes_in_ > 0 || role_ == Role::kClient)) {
    count(counters_, &Counters::incomplete);
    LOG_INFO("TLS handshake with %s not completed (timed out or abandoned after %llu bytes)", peer_.c_str(),
             static_cast<unsigned long long>(wire_bytes_in_));
  }
  if (ssl_ != nullptr) {
    // Connections mostly end without a close_notify exchange; OpenSSL would then treat the
    // session as broken and refuse to resume it. A session whose handshake and records were good
    // stays resumable (nginx does the same).
    if (handshake_done_ && !failed_) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl_);
  }
  ERR_clear_error();
}

BIO_METHOD* Filter::bio_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "limpet stream filter");
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, [](BIO* bio) {
      BIO_set_init(bio, 1);
      return 1;
    });
    return m;
  }();
  return method;
}

int Filter::bio_read(BIO* bio, char* out, int size) {
  auto* self = static_cast<Filter*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (self->in_.empty()) {
    BIO_set_retry_read(bio);  // SSL_ERROR_WANT_READ: wait for the next on_wire
    return -1;
  }
  const size_t n = std::min(self->in_.size(), static_cast<size_t>(std::max(size, 0)));
  std::memcpy(out, self->in_.data(), n);
  self->in_.remove_prefix(n);
  return static_cast<int>(n);
}

int Filter::bio_write(BIO* bio, const char* data, int size) {
  auto* self = static_cast<Filter*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (self->out_ == nullptr) return -1;  // OpenSSL writing outside a call: nowhere to put it
  self->out_->append(data, static_cast<size_t>(std::max(size, 0)));
  return size;
}

long Filter::bio_ctrl(BIO*, int cmd, long, void*) {
  // Writes land in the stream's queue at once: flushing always succeeds, nothing is pending.
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

bool Filter::start(std::string* wire_out) {
  if (ssl_ == nullptr) {
    failed_ = true;
    LOG_ERROR("TLS with %s: cannot allocate a connection: %s", peer_.c_str(), detail::take_error().c_str());
    return false;
  }
  started_ = true;
  if (role_ == Role::kServer) return true;  // the client speaks first
  Io io(this, {}, wire_out);
  return advance_handshake();
}

bool Filter::on_wire(std::string_view wire, std::string* plain, std::string* wire_out) {
  if (failed_ || !started_) return false;
  wire_bytes_in_ += wire.size();
  Io io(this, wire, wire_out);
  if (!handshake_done_ && !advance_handshake()) return false;
  // Application data may follow the handshake's last flight in the same read.
  return !handshake_done_ || read_plain(plain);
}

bool Filter::on_plain(std::string_view plain, std::string* wire_out) {
  if (failed_) return false;
  if (!handshake_done_) {
    held_.append(plain);
    return true;
  }
  // Room for every record at once: appending record after record would reallocate and copy
  // the ciphertext written so far (a 16 KB response is two records).
  const size_t records = plain.size() / kReadStep + 1;
  wire_out->reserve(wire_out->size() + plain.size() + records * kRecordOverhead);
  Io io(this, {}, wire_out);
  return write_plain(plain);
}

void Filter::on_shutdown(std::string* wire_out) {
  if (failed_ || !handshake_done_ || shutdown_sent_) return;
  shutdown_sent_ = true;
  Io io(this, {}, wire_out);
  ERR_clear_error();
  SSL_shutdown(ssl_);  // queues close_notify; the peer's answer is not awaited
  ERR_clear_error();
}

bool Filter::advance_handshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    on_handshake_done();
    if (held_.empty()) return true;
    std::string held;
    held.swap(held_);  // the held bytes' memory goes with this call
    return write_plain(held);
  }
  const int error = SSL_get_error(ssl_, r);
  return error == SSL_ERROR_WANT_READ || fail(error, "handshake");
}

void Filter::on_handshake_done() {
  handshake_done_ = true;
  count(counters_, &Counters::handshakes);
  if (resumed()) count(counters_, &Counters::resumed);
  if (log::enabled(log::Level::kDebug)) {
    const std::string_view sni = server_name();
    LOG_DEBUG("TLS with %s: %s %s%s%.*s%s", peer_.c_str(), SSL_get_version(ssl_), SSL_get_cipher_name(ssl_),
              sni.empty() ? "" : ", SNI ", static_cast<int>(sni.size()), sni.data(), resumed() ? ", resumed" : "");
  }
}

bool Filter::read_plain(std::string* plain) {
  // Records are decrypted into a per-thread buffer and appended, not into *plain grown by a
  // record's size: that zero-filled 16 KB on every read (the last SSL_read of each call only
  // says WANT_READ) and made the stream's scratch string too big to keep, so a keep-alive
  // request of 100 bytes paid a 16 KB allocation, memset and free (seen in perf, bench/tls).
  thread_local char record[kReadStep];
  for (;;) {
    ERR_clear_error();
    const int n = SSL_read(ssl_, record, static_cast<int>(sizeof record));
    if (n > 0) {
      plain->append(record, static_cast<size_t>(n));
      continue;
    }
    const int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_WANT_READ) return true;
    if (error == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;  // close_notify; the TCP end follows and ends the stream
      return true;
    }
    return fail(error, "read");
  }
}

bool Filter::write_plain(std::string_view plain) {
  while (!plain.empty()) {
    ERR_clear_error();
    const int n = SSL_write(ssl_, plain.data(), static_cast<int>(std::min<size_t>(plain.size(), INT_MAX)));
    if (n <= 0) return fail(SSL_get_error(ssl_, n), "write");
    plain.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool Filter::fail(int ssl_error, const char* stage) {
  failed_ = true;
  const unsigned long first = ERR_peek_error();
  const int reason = ERR_GET_LIB(first) == ERR_LIB_SSL ? ERR_GET_REASON(first) : 0;
  std::string why = detail::take_error();
  if (why.empty()) why = "SSL error " + std::to_string(ssl_error);

  if (role_ == Role::kServer && (reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST)) {
    count(counters_, &Counters::failures);
    count(counters_, &Counters::plaintext);
    LOG_INFO("plain HTTP from %s on a TLS listener: answered 400", peer_.c_str());
    if (out_ != nullptr) out_->append(plain_http_response());
    return false;
  }
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    why += std::string(": ") + X509_verify_cert_error_string(SSL_get_verify_result(ssl_));
  } else if (reason == SSL_R_NO_APPLICATION_PROTOCOL) {
    why += " (ALPN: the client does not offer http/1.1)";
  }
  if (handshake_done_) {
    LOG_DEBUG("TLS %s with %s failed: %s", stage, peer_.c_str(), why.c_str());
  } else if (role_ == Role::kServer) {
    count(counters_, &Counters::failures);
    LOG_INFO("TLS handshake with %s failed: %s", peer_.c_str(), why.c_str());
  } else {
    count(counters_, &Counters::failures);  // a backend we cannot trust or talk to: the operator must know
    LOG_WARN("TLS handshake with %s failed: %s", peer_.c_str(), why.c_str());
  }
  return false;
}

std::string_view Filter::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int size = 0;
  if (ssl_ != nullptr) SSL_get0_alpn_selected(ssl_, &data, &size);
  return data == nullptr ? std::string_view() : std::string_view(reinterpret_cast<const char*>(data), size);
}

std::string_view Filter::server_name() const {
  const char* name = ssl_ != nullptr ? SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name) : nullptr;
  return name == nullptr ? std::string_view() : std::string_view(name);
}

std::string_view Filter::version() const { return handshake_done_ ? SSL_get_version(ssl_) : ""; }

bool Filter::resumed() const { return handshake_done_ && SSL_session_reused(ssl_) == 1; }

}  // namespace limpet::tls
