#include "otac/sys/fd.hpp"

#include <unistd.h>

namespace otac::sys {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

int Fd::release() noexcept {
  const int f = fd_;
  fd_ = -1;
  return f;
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) (void)::close(fd_);
  fd_ = fd;
}

int Fd::close() noexcept {
  // Linux releases the descriptor even when close fails (EINTR included): never retry.
  const int f = release();
  return f >= 0 ? ::close(f) : 0;
}

}  // namespace otac::sys
