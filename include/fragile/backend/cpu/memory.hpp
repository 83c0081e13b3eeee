// The CPU backend's memory: the fragile::cpu tag, host buffers on 64-byte boundaries through a
// cache of released blocks, and the thresholds below which its kernels run serially.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/error.hpp"


#include <algorithm>
#include <cstddef>
#include <mutex>
#include <new>
#include <unordered_map>
#include <string_view>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fragile {

namespace backend {

/// Keeps released large host blocks for reuse, by exact size. A forward, a training step or an
/// oracle evaluation allocates the same activation sizes every time; fresh pages from the OS
/// (a page fault and zeroing per 4 KiB) cost 20-30% of a small model's training step. Holds at
/// most kCapBytes; the rest goes back to the OS. Thread-safe.
class BlockCache {
 public:
  static constexpr std::align_val_t kAlignment{64};
  static constexpr std::size_t kMinBytes = std::size_t{1} << 16;
  static constexpr std::size_t kCapBytes = std::size_t{1} << 30;

  /// The process's cache (never destroyed: buffers in static storage may outlive main).
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache;
    return *cache;
  }

  void* take(std::size_t bytes) {
    if (bytes >= kMinBytes) {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (auto it = free_.find(bytes); it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        return p;
      }
    }
    return ::operator new(bytes, kAlignment);
  }

  void give(void* p, std::size_t bytes) noexcept {
    if (bytes >= kMinBytes) {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kCapBytes) {
        try {
          free_[bytes].push_back(p);
          cached_ += bytes;
          return;
        } catch (...) {  // no memory for the bookkeeping: release the block instead
        }
      }
    }
    ::operator delete(p, kAlignment);
  }

  /// Returns every cached block to the OS.
  void release() noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) ::operator delete(p, kAlignment);
    free_.clear();
    cached_ = 0;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::size_t cached_ = 0;
};

/// Allocates on 64-byte boundaries (a cache line; a whole AVX-512 register), through the
/// BlockCache. Eigen's vectorised kernels treat the unaligned head of an array with scalar
/// code, so with malloc's alignment the same computation rounds differently from run to run;
/// with every buffer aligned alike, repeated runs are bit-identical.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() noexcept = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(BlockCache::instance().take(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { BlockCache::instance().give(p, n * sizeof(T)); }
  template <class U>
  friend bool operator==(const AlignedAllocator&, const AlignedAllocator<U>&) noexcept {
    return true;
  }
};

}  // namespace backend

/// Tag of the CPU backend.
struct cpu {
  static constexpr std::string_view name = "cpu";
  static constexpr backend::Memory memory = backend::Memory::kHost;
  template <class T>
  using Buffer = std::vector<T, backend::AlignedAllocator<T>>;
};

namespace backend {

/// Below this many elements a kernel runs serially: a parallel region costs more than the work.
inline constexpr std::size_t kCpuParallelMin = 1 << 15;

/// Products with fewer multiply-adds than this run on one thread.
inline constexpr std::size_t kGemmSplitMin = std::size_t{1} << 21;

/// Threads the CPU backend uses (OpenMP's current maximum; 1 without OpenMP).
inline int cpu_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace backend

}  // namespace fragile
