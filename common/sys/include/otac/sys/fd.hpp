// An owned POSIX file descriptor.
#pragma once

namespace otac::sys {

/// Owns one file descriptor and closes it once; move-only.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  /// The descriptor, or -1; ownership stays here.
  int get() const noexcept { return fd_; }
  /// True when a descriptor is held.
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  /// Gives up ownership without closing.
  int release() noexcept;
  /// Closes the held descriptor (if any) and takes `fd`.
  void reset(int fd = -1) noexcept;
  /// Closes now and reports close(2)'s result (0, or -1 with errno), for writers that must
  /// know that the data reached the file; afterwards the Fd is empty.
  int close() noexcept;

 private:
  int fd_ = -1;
};

}  // namespace otac::sys
