// Errors as values for the MLIR-free runtime: every fallible call returns a
// Result<T> (or Status), and the tools turn an Error into one line and a
// non-zero exit. No exceptions cross the runtime's API.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace moe {

class Error {
public:
  explicit Error(std::string message) : message_(std::move(message)) {}
  const std::string &message() const { return message_; }

  // Prefixes context ("tokenizer.json: " + message) while the error travels up.
  Error withContext(const std::string &context) const {
    return Error(context + ": " + message_);
  }

private:
  std::string message_;
};

template <typename... Args>
Error makeError(fmt::format_string<Args...> format, Args &&...args) {
  return Error(fmt::format(format, std::forward<Args>(args)...));
}

template <typename T> class [[nodiscard]] Result {
public:
  Result(T value) : storage_(std::move(value)) {}
  Result(Error error) : storage_(std::move(error)) {}

  bool ok() const { return std::holds_alternative<T>(storage_); }
  explicit operator bool() const { return ok(); }

  T &value() & { return std::get<T>(storage_); }
  const T &value() const & { return std::get<T>(storage_); }
  T &&value() && { return std::get<T>(std::move(storage_)); }
  T &operator*() & { return value(); }
  const T &operator*() const & { return value(); }
  T *operator->() { return &value(); }
  const T *operator->() const { return &value(); }

  const Error &error() const { return std::get<Error>(storage_); }

private:
  std::variant<T, Error> storage_;
};

// Result of an operation that yields nothing but may fail.
class [[nodiscard]] Status {
public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), failed_(true) {}
  static Status success() { return Status(); }

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error &error() const { return error_; }

private:
  Error error_{""};
  bool failed_ = false;
};

} // namespace moe

// Propagates a failed Status/Result from the enclosing function.
#define MOE_RETURN_IF_ERROR(expr)                                              \
  do {                                                                         \
    auto moeStatus_ = (expr);                                                  \
    if (!moeStatus_.ok())                                                      \
      return moeStatus_.error();                                               \
  } while (false)

// `decl = *expr` for a successful Result, else returns its error from the
// enclosing function: MOE_ASSIGN_OR_RETURN(float *x, step.alloc<float>(n)).
#define MOE_ASSIGN_OR_RETURN(decl, expr)                                       \
  MOE_ASSIGN_OR_RETURN_(MOE_CONCAT_(moeResult_, __LINE__), decl, expr)
#define MOE_ASSIGN_OR_RETURN_(result, decl, expr)                              \
  auto result = (expr);                                                        \
  if (!result.ok())                                                            \
    return result.error();                                                     \
  decl = std::move(*result)
#define MOE_CONCAT_(a, b) MOE_CONCAT_INNER_(a, b)
#define MOE_CONCAT_INNER_(a, b) a##b
