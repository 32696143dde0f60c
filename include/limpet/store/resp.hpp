// RESP, the Redis protocol: commands formatted as arrays of bulk strings, replies decoded by
// hiredis's reply reader into owned values. Pure byte handling (no I/O): the connection is
// RedisClient's, over limpet's own net::Stream (so TLS is the tls layer's filter). Any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace limpet::store {

struct Reply {
  enum class Type : uint8_t {
    kStatus,        // +OK
    kError,         // -ERR ..., also the reader's own protocol errors
    kString,        // bulk string
    kInteger,
    kNil,           // null bulk string or array
    kArray,
    kTimeout,       // not from Redis: no reply within the command's timeout
    kDisconnected,  // not from Redis: the connection ended before the reply came
  };
  Type type = Type::kNil;
  std::string str;  // kStatus, kError, kString; the reason for kTimeout and kDisconnected
  long long integer = 0;
  std::vector<Reply> elements;  // kArray

  bool failed() const { return type == Type::kError || type == Type::kTimeout || type == Type::kDisconnected; }
};

// `*<n>\r\n$<len>\r\n<arg>\r\n...` appended to `out`: pipelined commands share one buffer.
void append_command(std::string& out, std::span<const std::string_view> argv);

// Incremental: feed bytes as they arrive, take complete replies out. After a protocol error the
// stream cannot be resynchronised: error() stays set and the connection must be dropped.
class ReplyReader {
 public:
  ReplyReader();
  ~ReplyReader();
  ReplyReader(const ReplyReader&) = delete;
  ReplyReader& operator=(const ReplyReader&) = delete;

  void feed(std::string_view data);
  // The next complete reply into `out`; false when none is complete yet, or after an error.
  bool next(Reply& out);
  bool error() const { return !error_.empty(); }
  const std::string& error_reason() const { return error_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string error_;
};

}  // namespace limpet::store
