#include "otac/sys/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "otac/sys/fd.hpp"

namespace otac::sys {
namespace {

Error sys_error(const std::string& what, const std::filesystem::path& p) {
  return make_error(Errc::io, what + " " + p.string() + ": " + std::strerror(errno));
}

// Removes the temporary file unless released: a failed write leaves nothing behind.
struct TempGuard {
  std::filesystem::path path;
  bool armed = true;
  ~TempGuard() {
    if (armed) (void)::unlink(path.c_str());
  }
};

}  // namespace

Result<void> write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> data,
                               const WriteOptions& opt) {
  if (!path.has_filename()) return make_error(Errc::bad_value, "cannot write '" + path.string() + "': not a file name");
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  auto cut = [&] { return opt.cut && opt.cut(); };
  const Error power_cut = make_error(Errc::io, "write of " + path.string() + " cut (injected power loss)");

  if (cut()) return power_cut;
  // A unique name, so that concurrent writers never share a temporary file.
  std::string tmpl = (dir / ("." + path.filename().string() + ".XXXXXX")).string();
  Fd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd) return make_error(Errc::io, "cannot create a temporary file next to " + path.string() + ": " +
                                           std::strerror(errno) + " (check the directory exists and is writable)");
  const std::filesystem::path tmp = tmpl;
  TempGuard guard{tmp};
  if (::fchmod(fd.get(), static_cast<mode_t>(opt.mode & 07777)) != 0) return sys_error("cannot set the mode of", tmp);
  const std::size_t chunk = std::max<std::size_t>(opt.chunk, 1);
  for (std::size_t pos = 0; pos < data.size();) {
    if (cut()) { guard.armed = false; return power_cut; }
    const ssize_t w = ::write(fd.get(), data.data() + pos, std::min(chunk, data.size() - pos));
    if (w < 0) {
      if (errno == EINTR) continue;
      return sys_error("cannot write", tmp);
    }
    pos += static_cast<std::size_t>(w);
  }
  if (cut()) { guard.armed = false; return power_cut; }
  if (::fsync(fd.get()) != 0) return sys_error("cannot fsync", tmp);
  if (fd.close() != 0) return sys_error("cannot close", tmp);
  if (cut()) { guard.armed = false; return power_cut; }
  if (opt.replace) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) return sys_error("cannot rename a temporary file over", path);
  } else {
    // link(2) fails with EEXIST instead of replacing: an atomic create with the content in place.
    if (::link(tmp.c_str(), path.c_str()) != 0) {
      if (errno == EEXIST) return make_error(Errc::conflict, path.string() + " exists already");
      return sys_error("cannot create", path);
    }
    (void)::unlink(tmp.c_str());
  }
  guard.armed = false;
  if (cut()) return {};  // renamed: the new content is in place even if the directory sync is lost
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0) return sys_error("cannot fsync directory", dir);
  return {};
}

Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data, const WriteOptions& opt) {
  return write_file_atomic(path, std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()), opt);
}

Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_size) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_error("cannot read", path);
  std::string out;
  char buf[4096];
  // Bounded by max_size: every pass adds at least one byte or ends.
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("cannot read", path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_size)
      return make_error(Errc::bad_length, path.string() + " is larger than " + std::to_string(max_size) + " bytes");
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace otac::sys
