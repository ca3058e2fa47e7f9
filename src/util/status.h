// Errors as values (DESIGN.md §7.6): library code returns Status or Result<T>, never exits or
// aborts on bad input. GCC 12 has no std::expected, so this is a small one of our own.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace dsv3 {

class Status {
 public:
  Status() = default;  // ok
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message), true); }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

  // Prefixes the message with context, e.g. the file name: "model.safetensors: header too large".
  Status WithContext(const std::string& context) const {
    if (ok()) return *this;
    return Error(context + ": " + message_);
  }

 private:
  Status(std::string message, bool failed) : message_(std::move(message)), failed_(failed) {}
  std::string message_;
  bool failed_ = false;
};

// Formats an error: Err("tensor {} has shape {}", name, shape).
template <typename... Args>
Status Err(fmt::format_string<Args...> format, Args&&... args) {
  return Status::Error(fmt::format(format, std::forward<Args>(args)...));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!status_.ok() && "Result constructed from an ok Status without a value");
    if (status_.ok()) status_ = Status::Error("internal error: empty result");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace dsv3

// Propagates a failed Status: DSV3_RETURN_IF_ERROR(ReadHeader(file));
#define DSV3_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::dsv3::Status dsv3_status_ = (expr);        \
    if (!dsv3_status_.ok()) return dsv3_status_; \
  } while (0)

#define DSV3_CONCAT_INNER(a, b) a##b
#define DSV3_CONCAT(a, b) DSV3_CONCAT_INNER(a, b)

// Unwraps a Result or returns its Status: DSV3_ASSIGN_OR_RETURN(auto file, Open(path));
#define DSV3_ASSIGN_OR_RETURN(lhs, expr) \
  DSV3_ASSIGN_OR_RETURN_IMPL(DSV3_CONCAT(dsv3_result_, __LINE__), lhs, expr)
#define DSV3_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
