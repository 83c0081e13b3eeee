// Atomic file replacement: readers of `path` see either the old file or the complete new one,
// never a partial write, even if the process dies midway (temp file + fsync + rename).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string_view>

#include "fragile/core/error.hpp"

namespace fragile::io {

/// A file written in pieces and published atomically: the pieces go to a temporary file next
/// to `path`; commit() flushes it to disk and renames it over `path`. Without commit() (an
/// exception, say) the temporary file is removed, so readers never see a partial file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {
    static std::atomic<unsigned> counter{0};
    tmp_ = path_;
    tmp_ += fmt::format(".tmp.{}.{}", ::getpid(), counter++);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) raise<IoError>("cannot create '{}': {}", tmp_.string(), std::strerror(errno));
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) {
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }

  void write(std::span<const std::byte> bytes) {
    // In slices: one huge write() is several times slower than the same bytes in pieces.
    constexpr std::size_t kSlice = std::size_t{8} << 20;
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t w = ::write(fd_, bytes.data() + done, std::min(kSlice, bytes.size() - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0)
        raise<IoError>("cannot write '{}' ({} bytes written): {}", tmp_.string(),
                       written_ + done, std::strerror(errno));
      done += static_cast<std::size_t>(w);
    }
    written_ += done;
  }

  void commit() {
    const bool synced = ::fsync(fd_) == 0;
    const int sync_errno = errno;
    const bool closed = ::close(fd_) == 0;
    const int close_errno = errno;
    fd_ = -1;
    if (!synced || !closed)
      raise<IoError>("cannot flush '{}': {}", tmp_.string(),
                     std::strerror(synced ? close_errno : sync_errno));
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec)
      raise<IoError>("cannot rename '{}' to '{}': {}", tmp_.string(), path_.string(), ec.message());
    committed_ = true;
  }

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  std::size_t written_ = 0;
};

/// Writes `bytes` to a temporary file next to `path`, flushes it and renames it over `path`,
/// so readers never see a partial file.
inline void write_atomically(const std::filesystem::path& path,
                             std::span<const std::byte> bytes) {
  AtomicFileWriter f(path);
  f.write(bytes);
  f.commit();
}

/// Text overload (JSON files and the like).
inline void write_atomically(const std::filesystem::path& path, std::string_view text) {
  write_atomically(path, {reinterpret_cast<const std::byte*>(text.data()), text.size()});
}

}  // namespace fragile::io
