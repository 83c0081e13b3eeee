// The backend seam: everything the model, evaluation and sensitivity code asks of a compute
// backend, in one place.
//
// A backend is a tag type (fragile::cpu, fragile::reference, later fragile::cuda) with
//   B::name                        its name
//   B::memory                      where its buffers live (Memory::kHost or kDevice)
//   typename B::Buffer<T>          owning storage in that memory: Buffer(n), data(), size(),
//                                  resize(n); its elements are never touched by model code
// plus one specialisation of backend::Ops<B> holding every kernel: transfers, GEMM, the layer
// kernels (embedding, RMSNorm, RoPE, attention, SwiGLU, bias), the LM head's fused row kernels
// (log-sum-exp with argmax, cross-entropy gradient, KL, NLL gather, label sampling) and the
// reductions of the metric pass. The model is written once against Ops<B>; a new backend
// specialises Ops<B> under backend/<name>/ and touches no file in model/, eval/ or
// sensitivity/. Every pointer handed to an Ops<B> kernel points into B's memory.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace fragile::backend {

/// Whether a GEMM operand is used as stored or transposed.
enum class Trans { kN, kT };

/// Where a backend's buffers live. Host memory can be read by host code directly; device memory
/// only through Ops<B>::download.
enum class Memory { kHost, kDevice };

/// The operations of backend B. The unspecialised template names what is missing.
template <class B>
struct Ops {
  static_assert(sizeof(B) == 0,
                "fragile::backend::Ops<B> has no specialisation for this backend tag: include "
                "<fragile/backend/cpu.hpp> (fragile::cpu), <fragile/backend/reference.hpp> "
                "(fragile::reference) or the CUDA backend header");
};

/// Grouped-query causal self-attention over a batch of windows (row b*T + t is token t of
/// window b), with an optional sliding window.
struct AttentionShape {
  std::size_t batch = 0;
  std::size_t seq_len = 0;
  std::size_t heads = 0;
  std::size_t kv_heads = 0;
  std::size_t head_dim = 0;
  std::optional<std::size_t> sliding_window;  ///< query t sees keys t - window < j <= t

  /// First key position query t may see.
  [[nodiscard]] std::size_t first_key(std::size_t t) const noexcept {
    if (!sliding_window || *sliding_window == 0 || t + 1 <= *sliding_window) return 0;
    return t + 1 - *sliding_window;
  }
};

/// How the rotary embedding pairs dimensions within a head.
enum class RopeStyle {
  kHalf,         ///< Hugging Face rotate_half: dimension i pairs with i + D/2
  kInterleaved,  ///< llama2.c / Meta: dimension 2i pairs with 2i + 1
};

/// The rotary embedding of rows (N, heads, D) whose row r sits at position r % seq_len, with
/// cos/sin tables (seq_len, D/2) in the backend's memory.
struct RopeShape {
  std::size_t rows = 0;
  std::size_t seq_len = 0;
  std::size_t heads = 0;
  std::size_t head_dim = 0;
  RopeStyle style = RopeStyle::kHalf;
};

/// Which rows of a (rows, width) activation carry a loss term: row r is scored when
/// r % seq_len < scored (the last position of a window has no next token under data labels).
struct ScoredRows {
  std::size_t seq_len = 1;
  std::size_t scored = 1;
  [[nodiscard]] bool operator()(std::size_t r) const noexcept { return r % seq_len < scored; }
};

/// A compute backend tag with its operations.
template <class B>
concept Backend = requires {
  { B::name } -> std::convertible_to<std::string_view>;
  { B::memory } -> std::convertible_to<Memory>;
  typename B::template Buffer<float>;
  typename B::template Buffer<std::int32_t>;
} && requires(Trans t, std::size_t n, float a, const float* x, float* y) {
  // C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C, all row-major with leading dims.
  Ops<B>::gemm(t, t, n, n, n, a, x, n, x, n, a, y, n);
  Ops<B>::upload(y, x, n);
  Ops<B>::download(y, x, n);
  Ops<B>::synchronize();
};

/// A read-only view of n floats in backend memory that says where it lives. Host code that wants
/// the values asks for them: host() is the view itself for host memory and a copy (kept in the
/// view) for device memory.
class TensorView {
 public:
  using Download = void (*)(float* host, const float* src, std::size_t n);

  TensorView() = default;
  TensorView(const float* data, std::size_t size, Memory memory, Download download) noexcept
      : data_(data), size_(size), memory_(memory), download_(download) {}

  /// A view of B's memory.
  template <class B>
  static TensorView of(const float* data, std::size_t size) noexcept {
    return TensorView(data, size, B::memory, [](float* h, const float* s, std::size_t n) {
      Ops<B>::download(h, s, n);
    });
  }

  [[nodiscard]] explicit operator bool() const noexcept { return data_ != nullptr; }
  [[nodiscard]] const float* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] Memory memory() const noexcept { return memory_; }

  /// The values in host memory (empty for a null view).
  [[nodiscard]] std::span<const float> host() const {
    if (!data_) return {};
    if (memory_ == Memory::kHost) return {data_, size_};
    if (staging_.size() != size_) {
      staging_.resize(size_);
      download_(staging_.data(), data_, size_);
    }
    return {staging_.data(), staging_.size()};
  }

 private:
  const float* data_ = nullptr;
  std::size_t size_ = 0;
  Memory memory_ = Memory::kHost;
  Download download_ = nullptr;
  mutable std::vector<float> staging_;
};

}  // namespace fragile::backend
