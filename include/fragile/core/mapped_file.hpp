// Read-only memory map of a whole file (POSIX mmap), RAII and movable.
#pragma once

#include "fragile/core/error.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

namespace fragile {

class MappedFile {
 public:
  MappedFile() = default;

  /// Maps `path` read-only. Throws IoError naming the path and the system error.
  explicit MappedFile(const std::filesystem::path& path) : path_(path) {
    // O_NONBLOCK: open() of a FIFO would otherwise wait for a writer; it is refused below.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) raise<IoError>("cannot open '{}': {}", path.string(), std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      raise<IoError>("cannot stat '{}': {}", path.string(), std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      raise<IoError>("'{}': not a regular file (a directory, FIFO or device cannot be read)",
                     path.string());
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        raise<IoError>("cannot mmap '{}' ({} bytes): {}", path.string(), size_, std::strerror(e));
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { swap(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      MappedFile tmp(std::move(other));
      swap(tmp);
    }
    return *this;
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  [[nodiscard]] const std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void swap(MappedFile& other) noexcept {
    std::swap(path_, other.path_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace fragile
