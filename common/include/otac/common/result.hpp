// Errors as values at module boundaries: Result<T> holds a value or an Error.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace otac {

/// What went wrong, coarsely; the message says exactly what and what to do.
enum class Errc {
  truncated,        ///< input ended before a field was complete
  trailing_data,    ///< bytes left over after a complete structure
  bad_length,       ///< a length field disagrees with the data or exceeds a limit
  bad_value,        ///< a field holds a value the format does not allow
  unsupported,      ///< valid per the standard but not implemented or not enabled
  bad_mac,          ///< a MAC, CC or signature did not verify
  replay,           ///< a counter did not advance as required
  unknown_key,      ///< no key for the given identifier
  crypto,           ///< the crypto library reported a failure
  io,               ///< an operating-system or network operation failed
  timeout,          ///< an operation did not finish in its time limit
  state,            ///< the operation is not allowed in the current state
  not_found,        ///< the thing asked for does not exist
  conflict,         ///< the thing exists already, or was used already
  internal,         ///< a bug: an invariant did not hold
  unavailable,      ///< a service this one needs (a key token) is out for now; retry later
};

/// A short stable name for an error code ("truncated", "bad_mac", ...).
const char* errc_name(Errc e) noexcept;

/// An error: a code for programs, a message for people.
struct Error {
  Errc code;
  std::string message;
};

/// Either a T or an Error. A minimal stand-in for C++23 std::expected.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}        // NOLINT(google-explicit-constructor)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

/// Result of an operation that yields nothing on success.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)
  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const& { return err_; }
  Error&& error() && { return std::move(err_); }

 private:
  Error err_{Errc::internal, {}};
  bool failed_ = false;
};

/// Builds an Error; reads well at a return statement.
inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

/// An Error thrown where a Result cannot be returned (a key sealed inside a store row's
/// binding, say). Whoever catches it keeps the code: a token that is out for now stays
/// `unavailable` for the client instead of becoming an internal error.
class Failure : public std::runtime_error {
 public:
  explicit Failure(Error e) : std::runtime_error(e.message), error_(std::move(e)) {}
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

}  // namespace otac
