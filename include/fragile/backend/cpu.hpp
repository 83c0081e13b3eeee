// The CPU backend: fragile::cpu. GEMM through OpenBLAS's sgemm (or Eigen's), split over OpenMP
// threads by fragile itself, host
// std::vector storage, elementwise kernels as OpenMP loops or thrust on the OMP device system.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/error.hpp"

#include <Eigen/Core>
#if defined(FRAGILE_WITH_OPENBLAS)
#include <cblas.h>
#endif
#include <thrust/system/cpp/execution_policy.h>
#if defined(_OPENMP)
#include <thrust/system/omp/execution_policy.h>
#endif

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

template <>
struct Ops<cpu> {
  using Stride = Eigen::OuterStride<>;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Stride>;
  using Map = Eigen::Map<RowMajor, Eigen::Unaligned, Stride>;

  /// C (m, n) = alpha * op(A) * op(B) + beta * C, row-major; op(A) is (m, k), op(B) is (k, n).
  /// A is stored (m, k) when ta == kN and (k, m) when kT; likewise B. beta is 0 or 1 (the two
  /// values the runtime uses); beta == 0 never reads C.
  /// Large products are split into one independent single-threaded Eigen GEMM per thread along
  /// the larger of m and n: one fork/join per call instead of Eigen's spin-synchronised shared
  /// packing, which degrades badly when the cores are shared with other processes.
  static void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
                   const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
                   float* c, std::size_t ldc) {
    require<ArgumentError>(beta == 0.0f || beta == 1.0f, "cpu gemm: beta must be 0 or 1, got {}",
                           beta);
    if (m == 0 || n == 0) return;
#if defined(_OPENMP)
    const auto threads = static_cast<std::size_t>(cpu_threads());
    if (threads > 1 && !omp_in_parallel() && m * n * k >= kGemmSplitMin) {
      const bool split_n = n >= m;
      const std::size_t extent = split_n ? n : m;
      const std::size_t parts = std::min(threads, std::max<std::size_t>(1, extent / 16));
      // Part boundaries rounded to multiples of 16 (whole SIMD panels).
      auto bound = [&](std::size_t p) {
        return p == parts ? extent : std::min(extent, (extent * p / parts) / 16 * 16);
      };
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(parts))
      for (std::size_t p = 0; p < parts; ++p) {
        const std::size_t lo = bound(p), hi = bound(p + 1);
        if (hi <= lo) continue;
        if (split_n) {
          const float* bp = tb == Trans::kT ? b + lo * ldb : b + lo;
          gemm_serial(ta, tb, m, hi - lo, k, alpha, a, lda, bp, ldb, beta, c + lo, ldc);
        } else {
          const float* ap = ta == Trans::kT ? a + lo : a + lo * lda;
          gemm_serial(ta, tb, hi - lo, n, k, alpha, ap, lda, b, ldb, beta, c + lo * ldc, ldc);
        }
      }
      return;
    }
#endif
    gemm_serial(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }

  /// gemm() on the calling thread only: OpenBLAS's sgemm when the build has it (1.2-1.4x
  /// Eigen's on the runtime's shapes), else Eigen's.
  static void gemm_serial(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k,
                          float alpha, const float* a, std::size_t lda, const float* b,
                          std::size_t ldb, float beta, float* c, std::size_t ldc) {
#if defined(FRAGILE_WITH_OPENBLAS)
    if (k == 0) {
      if (beta == 0.0f)
        for (std::size_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
      return;
    }
    // fragile splits large products over its threads itself: OpenBLAS runs on the caller's.
    static const bool single = [] {
      openblas_set_num_threads(1);
      return true;
    }();
    (void)single;
    const auto I = [](std::size_t v) { return static_cast<blasint>(v); };
    cblas_sgemm(CblasRowMajor, ta == Trans::kT ? CblasTrans : CblasNoTrans,
                tb == Trans::kT ? CblasTrans : CblasNoTrans, I(m), I(n), I(k), alpha, a, I(lda), b,
                I(ldb), beta, c, I(ldc));
#else
    const auto I = [](std::size_t v) { return static_cast<Eigen::Index>(v); };
    Map C(c, I(m), I(n), Stride(I(ldc)));
    if (k == 0) {
      if (beta == 0.0f) C.setZero();
      return;
    }
    const bool at = ta == Trans::kT;
    const bool bt = tb == Trans::kT;
    ConstMap A(a, at ? I(k) : I(m), at ? I(m) : I(k), Stride(I(lda)));
    ConstMap B(b, bt ? I(n) : I(k), bt ? I(k) : I(n), Stride(I(ldb)));
    // Four explicit branches so that Eigen sees plain or transposed maps (no temporaries).
    // Inside an OpenMP parallel region Eigen runs the product on the calling thread.
    auto run = [&](const auto& opa, const auto& opb) {
      if (beta == 0.0f) {
        if (alpha == 1.0f) C.noalias() = opa * opb;
        else C.noalias() = alpha * (opa * opb);
      } else {
        if (alpha == 1.0f) C.noalias() += opa * opb;
        else C.noalias() += alpha * (opa * opb);
      }
    };
    if (!at && !bt) run(A, B);
    else if (!at && bt) run(A, B.transpose());
    else if (at && !bt) run(A.transpose(), B);
    else run(A.transpose(), B.transpose());
#endif
  }

  static void synchronize() noexcept {}

  /// thrust execution policy for elementwise kernels on host memory: the OpenMP system when the
  /// build has OpenMP, else the serial C++ system (independent of THRUST_DEVICE_SYSTEM, so a CUDA
  /// build still runs these host kernels on the host).
  static auto policy() noexcept {
#if defined(_OPENMP)
    return thrust::omp::par;
#else
    return thrust::cpp::par;
#endif
  }
};

}  // namespace backend

static_assert(backend::Backend<cpu>, "fragile::cpu must satisfy backend::Backend");

}  // namespace fragile
