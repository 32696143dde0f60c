// Result/Status: error values for code that must not throw (the data plane) and for loaders
// that report a precise message. GCC 12 has no std::expected. Any thread.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace limpet {

struct Error {
  std::string message;
};

class Status {
 public:
  Status() = default;
  static Status ok() { return {}; }
  static Status fail(std::string message) { return Status(std::move(message)); }

  bool is_ok() const { return !error_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const std::string& message() const { return error_->message; }

 private:
  explicit Status(std::string message) : error_(Error{std::move(message)}) {}
  std::optional<Error> error_;
};

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT
  static Result fail(std::string message) { return Result(Error{std::move(message)}); }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const std::string& message() const { return std::get<Error>(v_).message; }

 private:
  std::variant<T, Error> v_;
};

}  // namespace limpet
