// Atomic file replacement: readers of `path` see either the old file or the complete new one,
// never a partial write, even if the process dies midway (temp file + fsync + rename).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string_view>

#include "fragile/core/error.hpp"

namespace fragile::io {

/// Writes `bytes` to a temporary file next to `path`, flushes it and renames it over `path`,
/// so readers never see a partial file.
inline void write_atomically(const std::filesystem::path& path,
                                  std::span<const std::byte> bytes) {
  static std::atomic<unsigned> counter{0};
  auto tmp = path;
  tmp += fmt::format(".tmp.{}.{}", ::getpid(), counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) raise<IoError>("cannot create '{}': {}", tmp.string(), std::strerror(errno));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = errno;
      ::close(fd);
      std::filesystem::remove(tmp);
      raise<IoError>("cannot write '{}' ({} of {} bytes written): {}", tmp.string(), done,
                     bytes.size(), std::strerror(e));
    }
    done += static_cast<std::size_t>(w);
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  if (::close(fd) != 0 || !synced) {
    const int e = synced ? errno : sync_errno;
    std::filesystem::remove(tmp);
    raise<IoError>("cannot flush '{}': {}", tmp.string(), std::strerror(e));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    raise<IoError>("cannot rename '{}' to '{}': {}", tmp.string(), path.string(), ec.message());
  }
}

/// Text overload (JSON files and the like).
inline void write_atomically(const std::filesystem::path& path, std::string_view text) {
  write_atomically(path, {reinterpret_cast<const std::byte*>(text.data()), text.size()});
}

}  // namespace fragile::io
