// The checkpoint connection's VFS (sqlite_paced_vfs.hpp).
//
// A checkpoint copies the pages of the WAL into the database file (page-cache writes) and then
// fsyncs it. On a store of 10^5 cards and more those pages are scattered, a round holds up to
// a thousand of them, and the fsync hands them all to the device at once: the WAL's
// fdatasync, issued every millisecond by the syncing thread, then queues behind megabytes of
// them. That was the whole tail of an authorization at a fixed 1,000/s on a full store.
// Here xSync of a main database file first sends the ranges written since the last sync to
// the disk in runs of kRunBytes, waiting for each run before starting the next
// (sync_file_range, WRITE then WAIT_AFTER), so that at most one run is ever queued ahead of a
// WAL flush. Then it calls the default VFS's xSync as before: that fsync is still what makes
// the checkpoint durable, and it also flushes the device's cache. An error of a paced run is
// returned as SQLITE_IOERR_FSYNC; the default xSync would report it too (errseq), this only
// reports it first.
#include "sqlite_paced_vfs.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace otac::backend::sqlite {
namespace {

constexpr sqlite3_int64 kRunBytes = 128 * 1024;  // 32 pages of 4 KiB

std::atomic<std::uint64_t> g_synced{0}, g_paced_bytes{0}, g_runs{0};

// The VFS's file object for a main database file: SQLite hands us szOsFile bytes of raw
// storage; this struct sits at its start and the default VFS's file at kRealOffset.
struct PacedFile {
  sqlite3_file base;             // first: SQLite sees a sqlite3_file
  sqlite3_file* real = nullptr;  // the default VFS's file, inside the same storage
  int fd = -1;                   // our own descriptor on the file, for sync_file_range
  std::vector<std::pair<sqlite3_int64, sqlite3_int64>> written;  // (offset, length) since the last sync
};
constexpr std::size_t kRealOffset = (sizeof(PacedFile) + alignof(std::max_align_t) - 1) / alignof(std::max_align_t) *
                                    alignof(std::max_align_t);

PacedFile* paced(sqlite3_file* f) { return reinterpret_cast<PacedFile*>(f); }
sqlite3_file* real(sqlite3_file* f) { return paced(f)->real; }
sqlite3_vfs* base_vfs(sqlite3_vfs* v) { return static_cast<sqlite3_vfs*>(v->pAppData); }

// Sends the written ranges to the disk, a run at a time. A run is the sorted ranges up to
// kRunBytes of written data; one WRITE and one WAIT_AFTER over its span (the span holds no
// other dirty pages of this file: only checkpoints write it while the backend runs, and a
// page written by anyone else is simply flushed a little early).
int pace(PacedFile& p) {
  auto& w = p.written;
  if (p.fd < 0 || w.empty()) {
    w.clear();
    return SQLITE_OK;
  }
  std::sort(w.begin(), w.end());
  std::size_t i = 0;
  int rc = SQLITE_OK;
  while (i < w.size()) {
    const sqlite3_int64 start = w[i].first;
    sqlite3_int64 end = start, bytes = 0;
    for (; i < w.size() && bytes < kRunBytes; ++i) {
      end = std::max(end, w[i].first + w[i].second);
      bytes += w[i].second;
    }
    if (::sync_file_range(p.fd, start, end - start, SYNC_FILE_RANGE_WRITE) != 0 ||
        ::sync_file_range(p.fd, start, end - start, SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
      rc = SQLITE_IOERR_FSYNC;
      break;
    }
    g_paced_bytes.fetch_add(static_cast<std::uint64_t>(bytes), std::memory_order_relaxed);
    g_runs.fetch_add(1, std::memory_order_relaxed);
  }
  w.clear();
  return rc;
}

int x_close(sqlite3_file* f) {
  PacedFile* p = paced(f);
  const int rc = p->real->pMethods->xClose(p->real);
  if (p->fd >= 0) ::close(p->fd);
  std::destroy_at(p);
  return rc;
}
int x_read(sqlite3_file* f, void* buf, int n, sqlite3_int64 off) { return real(f)->pMethods->xRead(real(f), buf, n, off); }
int x_write(sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
  const int rc = real(f)->pMethods->xWrite(real(f), buf, n, off);
  if (rc == SQLITE_OK) {
    try {
      paced(f)->written.emplace_back(off, n);
    } catch (const std::bad_alloc&) {
      // Not remembered: the fsync at xSync flushes the page all the same, only unpaced.
    }
  }
  return rc;
}
int x_truncate(sqlite3_file* f, sqlite3_int64 size) { return real(f)->pMethods->xTruncate(real(f), size); }
int x_sync(sqlite3_file* f, int flags) {
  g_synced.fetch_add(1, std::memory_order_relaxed);
  if (const int rc = pace(*paced(f)); rc != SQLITE_OK) return rc;
  return real(f)->pMethods->xSync(real(f), flags);
}
int x_file_size(sqlite3_file* f, sqlite3_int64* size) { return real(f)->pMethods->xFileSize(real(f), size); }
int x_lock(sqlite3_file* f, int level) { return real(f)->pMethods->xLock(real(f), level); }
int x_unlock(sqlite3_file* f, int level) { return real(f)->pMethods->xUnlock(real(f), level); }
int x_check_reserved(sqlite3_file* f, int* out) { return real(f)->pMethods->xCheckReservedLock(real(f), out); }
int x_file_control(sqlite3_file* f, int op, void* arg) { return real(f)->pMethods->xFileControl(real(f), op, arg); }
int x_sector_size(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
int x_device(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }
int x_shm_map(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return real(f)->pMethods->xShmMap(real(f), region, size, extend, out);
}
int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) { return real(f)->pMethods->xShmLock(real(f), offset, n, flags); }
void x_shm_barrier(sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); }
int x_shm_unmap(sqlite3_file* f, int del) { return real(f)->pMethods->xShmUnmap(real(f), del); }
int x_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** out) { return real(f)->pMethods->xFetch(real(f), off, n, out); }
int x_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) { return real(f)->pMethods->xUnfetch(real(f), off, p); }

const sqlite3_io_methods kMethods = {
    3,         x_close,       x_read,          x_write,        x_truncate,   x_sync,
    x_file_size, x_lock,      x_unlock,        x_check_reserved, x_file_control, x_sector_size,
    x_device,  x_shm_map,     x_shm_lock,      x_shm_barrier,  x_shm_unmap,  x_fetch,
    x_unfetch,
};

int x_open(sqlite3_vfs* v, const char* name, sqlite3_file* f, int flags, int* out_flags) {
  sqlite3_vfs* b = base_vfs(v);
  // Every other file (the WAL, journals, temporary files) is the default VFS's own, in the
  // same storage: SQLite then calls its methods directly.
  if ((flags & SQLITE_OPEN_MAIN_DB) == 0 || name == nullptr) return b->xOpen(b, name, f, flags, out_flags);
  auto* p = new (f) PacedFile{};
  p->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + kRealOffset);
  const int rc = b->xOpen(b, name, p->real, flags, out_flags);
  if (rc != SQLITE_OK || p->real->pMethods == nullptr || p->real->pMethods->iVersion < 3) {
    if (rc == SQLITE_OK && p->real->pMethods != nullptr) p->real->pMethods->xClose(p->real);
    std::destroy_at(p);
    f->pMethods = nullptr;  // SQLite does not call xClose on a file that failed to open
    return rc == SQLITE_OK ? SQLITE_CANTOPEN : rc;
  }
  p->fd = ::open(name, O_RDONLY | O_CLOEXEC);  // -1: no pacing; xSync's fsync still does all
  p->base.pMethods = &kMethods;
  return SQLITE_OK;
}
int x_delete(sqlite3_vfs* v, const char* name, int sync_dir) { return base_vfs(v)->xDelete(base_vfs(v), name, sync_dir); }
int x_access(sqlite3_vfs* v, const char* name, int flags, int* out) { return base_vfs(v)->xAccess(base_vfs(v), name, flags, out); }
int x_full_pathname(sqlite3_vfs* v, const char* name, int n, char* out) {
  return base_vfs(v)->xFullPathname(base_vfs(v), name, n, out);
}
void* x_dl_open(sqlite3_vfs* v, const char* name) { return base_vfs(v)->xDlOpen(base_vfs(v), name); }
void x_dl_error(sqlite3_vfs* v, int n, char* out) { base_vfs(v)->xDlError(base_vfs(v), n, out); }
void (*x_dl_sym(sqlite3_vfs* v, void* h, const char* sym))(void) { return base_vfs(v)->xDlSym(base_vfs(v), h, sym); }
void x_dl_close(sqlite3_vfs* v, void* h) { base_vfs(v)->xDlClose(base_vfs(v), h); }
int x_randomness(sqlite3_vfs* v, int n, char* out) { return base_vfs(v)->xRandomness(base_vfs(v), n, out); }
int x_sleep(sqlite3_vfs* v, int us) { return base_vfs(v)->xSleep(base_vfs(v), us); }
int x_current_time(sqlite3_vfs* v, double* out) { return base_vfs(v)->xCurrentTime(base_vfs(v), out); }
int x_last_error(sqlite3_vfs* v, int n, char* out) { return base_vfs(v)->xGetLastError(base_vfs(v), n, out); }
int x_current_time64(sqlite3_vfs* v, sqlite3_int64* out) { return base_vfs(v)->xCurrentTimeInt64(base_vfs(v), out); }

}  // namespace

const char* paced_vfs() {
  static const char* const name = []() -> const char* {
    sqlite3_vfs* b = sqlite3_vfs_find(nullptr);
    if (b == nullptr || b->iVersion < 2) return nullptr;
    static sqlite3_vfs vfs{};
    vfs.iVersion = 2;
    vfs.szOsFile = static_cast<int>(kRealOffset) + b->szOsFile;
    vfs.mxPathname = b->mxPathname;
    vfs.zName = "otac-paced";
    vfs.pAppData = b;
    vfs.xOpen = x_open;
    vfs.xDelete = x_delete;
    vfs.xAccess = x_access;
    vfs.xFullPathname = x_full_pathname;
    vfs.xDlOpen = x_dl_open;
    vfs.xDlError = x_dl_error;
    vfs.xDlSym = x_dl_sym;
    vfs.xDlClose = x_dl_close;
    vfs.xRandomness = x_randomness;
    vfs.xSleep = x_sleep;
    vfs.xCurrentTime = x_current_time;
    vfs.xGetLastError = x_last_error;
    vfs.xCurrentTimeInt64 = x_current_time64;
    return sqlite3_vfs_register(&vfs, 0) == SQLITE_OK ? vfs.zName : nullptr;
  }();
  return name;
}

PacedVfsStats paced_vfs_stats() {
  return {g_synced.load(std::memory_order_relaxed), g_paced_bytes.load(std::memory_order_relaxed),
          g_runs.load(std::memory_order_relaxed)};
}

}  // namespace otac::backend::sqlite
