#include "limpet/store/resp.hpp"

#include <hiredis/read.h>

#include <charconv>

namespace limpet::store {
namespace {

// Bounds on what a reply may make us hold (hiredis 0.14 has none of its own): limpet's replies
// are a backend name, "OK", counts and the fleet's member list.
constexpr int kMaxElements = 64 * 1024;
constexpr size_t kMaxUnparsed = 1024 * 1024;

struct ReaderState {
  const char* refusal = nullptr;  // why a create function refused (hiredis reports only OOM)
};

// Replies are built straight into Reply trees: an array reserves its elements, and each child
// is constructed in place at its index (the parent's vector never reallocates after that).
Reply* place(const redisReadTask* task, Reply::Type type) {
  if (task->parent == nullptr) {
    auto* r = new Reply;
    r->type = type;
    return r;
  }
  auto* parent = static_cast<Reply*>(task->parent->obj);
  auto idx = static_cast<size_t>(task->idx);
  if (idx >= parent->elements.capacity()) return nullptr;
  if (parent->elements.size() <= idx) parent->elements.resize(idx + 1);
  Reply* r = &parent->elements[idx];
  r->type = type;
  return r;
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
  Reply::Type type = Reply::Type::kString;
  if (task->type == REDIS_REPLY_STATUS) type = Reply::Type::kStatus;
  if (task->type == REDIS_REPLY_ERROR) type = Reply::Type::kError;
  Reply* r = place(task, type);
  if (r != nullptr) r->str.assign(str, len);
  return r;
}

void* create_array(const redisReadTask* task, int elements) {
  if (elements < 0 || elements > kMaxElements) {
    static_cast<ReaderState*>(task->privdata)->refusal = "array reply too long";
    return nullptr;
  }
  Reply* r = place(task, Reply::Type::kArray);
  if (r != nullptr) r->elements.reserve(static_cast<size_t>(elements));
  return r;
}

void* create_integer(const redisReadTask* task, long long value) {
  Reply* r = place(task, Reply::Type::kInteger);
  if (r != nullptr) r->integer = value;
  return r;
}

void* create_nil(const redisReadTask* task) { return place(task, Reply::Type::kNil); }

// hiredis frees only the root (a partial one after an error): children live inside it.
void free_object(void* reply) { delete static_cast<Reply*>(reply); }

redisReplyObjectFunctions kFunctions = {create_string, create_array, create_integer, create_nil, free_object};

void append_decimal(std::string& out, char marker, size_t n) {
  char buf[24];
  buf[0] = marker;
  auto [end, ec] = std::to_chars(buf + 1, buf + sizeof buf - 2, n);
  (void)ec;
  *end++ = '\r';
  *end++ = '\n';
  out.append(buf, end);
}

}  // namespace

void append_command(std::string& out, std::span<const std::string_view> argv) {
  append_decimal(out, '*', argv.size());
  for (std::string_view arg : argv) {
    append_decimal(out, '$', arg.size());
    out.append(arg);
    out.append("\r\n");
  }
}

struct ReplyReader::Impl {
  redisReader* reader = nullptr;
  ReaderState state;
};

ReplyReader::ReplyReader() : impl_(std::make_unique<Impl>()) {
  impl_->reader = redisReaderCreateWithFunctions(&kFunctions);
  if (impl_->reader == nullptr) {
    error_ = "out of memory";
    return;
  }
  impl_->reader->privdata = &impl_->state;
}

ReplyReader::~ReplyReader() {
  if (impl_->reader != nullptr) redisReaderFree(impl_->reader);
}

void ReplyReader::feed(std::string_view data) {
  if (error() || data.empty()) return;
  if (redisReaderFeed(impl_->reader, data.data(), data.size()) != 0) error_ = impl_->reader->errstr;
}

bool ReplyReader::next(Reply& out) {
  if (error()) return false;
  void* reply = nullptr;
  if (redisReaderGetReply(impl_->reader, &reply) != 0) {
    error_ = impl_->state.refusal != nullptr ? impl_->state.refusal : impl_->reader->errstr;
    return false;
  }
  if (reply == nullptr) {
    // An incomplete reply: checked here, not per feed, so the bound does not depend on how
    // the bytes were split into reads.
    if (impl_->reader->len - impl_->reader->pos > kMaxUnparsed) error_ = "reply larger than 1 MiB";
    return false;
  }
  auto* r = static_cast<Reply*>(reply);
  out = std::move(*r);
  delete r;
  return true;
}

}  // namespace limpet::store
