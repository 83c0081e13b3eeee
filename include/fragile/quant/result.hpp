// The output of every uniform quantizer: bit-packed integer codes, one scale and zero point per
// (row, group), the dequantized (fake-quant) weight, the layer loss, and the exact storage cost
// in bits that budget accounting charges for the layer.
//
// Dequantization is GPTQ's: W^[r, c] = scale[r, g] * (code[r, c] - zero[r, g]), g = c / group.
// Storage: rows*cols*bits for the codes, 16 bits per (row, group) scale, and for asymmetric
// grids `bits` bits per (row, group) zero point (a symmetric grid's zero is the constant
// 2^(bits-1) and costs nothing).
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/spec.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <cstring>
#include <vector>

namespace fragile::quant {

/// Read-only view of an (out, in) row-major f32 weight: binds to MatrixF, Eigen maps of
/// xtensor storage or of mmapped bytes, and row blocks, without copying.
using WeightRef = Eigen::Ref<const MatrixF>;

/// What `QuantizedWeight::loss` measures.
enum class LossKind {
  kNone,        // no loss computed
  kWeightSse,   // sum (W^ - W)^2 (no activations seen)
  kOutputMse,   // mean over tokens of ||(W^ - W) x_t||^2
  kGptqObs,     // GPTQ's accumulated OBS loss sum_i (w_i - q_i)^2 / (2 [H^-1]_ii), with
                // H = 2/N sum x x^T: an estimate of kOutputMse
};

/// Row-major bit-packed codes: code (r, c) occupies bits [c*bits, (c+1)*bits) of row r's
/// little-endian bit string; each row starts on a byte boundary.
class PackedCodes {
 public:
  PackedCodes() = default;
  PackedCodes(Index rows, Index cols, int bits)
      : rows_(rows), cols_(cols), bits_(bits), row_bytes_((cols * bits + 7) / 8),
        bytes_(static_cast<std::size_t>(rows * row_bytes_), 0) {}

  [[nodiscard]] Index rows() const noexcept { return rows_; }
  [[nodiscard]] Index cols() const noexcept { return cols_; }
  [[nodiscard]] int bits() const noexcept { return bits_; }
  [[nodiscard]] Index row_bytes() const noexcept { return row_bytes_; }
  [[nodiscard]] const std::vector<std::uint8_t>& bytes() const noexcept { return bytes_; }

  [[nodiscard]] int get(Index r, Index c) const noexcept {
    const Index bit = c * bits_;
    const std::uint8_t* p = bytes_.data() + r * row_bytes_ + bit / 8;
    const int shift = static_cast<int>(bit % 8);
    unsigned v = p[0];
    if (shift + bits_ > 8) v |= static_cast<unsigned>(p[1]) << 8;
    return static_cast<int>((v >> shift) & ((1u << bits_) - 1u));
  }

  void set(Index r, Index c, int code) noexcept {
    const Index bit = c * bits_;
    std::uint8_t* p = bytes_.data() + r * row_bytes_ + bit / 8;
    const int shift = static_cast<int>(bit % 8);
    const unsigned mask = ((1u << bits_) - 1u) << shift;
    const unsigned v = (static_cast<unsigned>(code) << shift) & mask;
    p[0] = static_cast<std::uint8_t>((p[0] & ~mask) | v);
    if (shift + bits_ > 8) {
      p[1] = static_cast<std::uint8_t>((p[1] & ~(mask >> 8)) | (v >> 8));
    }
  }

  /// Packs one whole row from `codes` (cols values in 0..2^bits-1); faster than set().
  void pack_row(Index r, const std::uint8_t* codes) noexcept {
    std::uint8_t* out = bytes_.data() + r * row_bytes_;
    if (bits_ == 8) {
      std::memcpy(out, codes, static_cast<std::size_t>(cols_));
      return;
    }
    if (bits_ == 4) {
      Index c = 0;
      for (; c + 1 < cols_; c += 2) *out++ = static_cast<std::uint8_t>(codes[c] | (codes[c + 1] << 4));
      if (c < cols_) *out = codes[c];
      return;
    }
    std::uint64_t acc = 0;
    int filled = 0;
    for (Index c = 0; c < cols_; ++c) {
      acc |= static_cast<std::uint64_t>(codes[c]) << filled;
      filled += bits_;
      if (filled >= 32) {
        std::memcpy(out, &acc, 4);
        out += 4;
        acc >>= 32;
        filled -= 32;
      }
    }
    while (filled > 0) {
      *out++ = static_cast<std::uint8_t>(acc);
      acc >>= 8;
      filled -= 8;
    }
  }

  /// Unpacks one whole row into `codes` (cols values); the inverse of pack_row.
  void unpack_row(Index r, std::uint8_t* codes) const noexcept {
    const std::uint8_t* in = bytes_.data() + r * row_bytes_;
    if (bits_ == 8) {
      std::memcpy(codes, in, static_cast<std::size_t>(cols_));
      return;
    }
    if (bits_ == 4) {
      Index c = 0;
      for (; c + 1 < cols_; c += 2, ++in) {
        codes[c] = *in & 0xfu;
        codes[c + 1] = static_cast<std::uint8_t>(*in >> 4);
      }
      if (c < cols_) codes[c] = *in & 0xfu;
      return;
    }
    const std::uint64_t mask = (1u << bits_) - 1u;
    std::uint64_t acc = 0;
    int filled = 0;
    for (Index c = 0; c < cols_; ++c) {
      if (filled < bits_) {  // refill a byte at a time: never reads past the row
        acc |= static_cast<std::uint64_t>(*in++) << filled;
        filled += 8;
        if (filled < bits_) {
          acc |= static_cast<std::uint64_t>(*in++) << filled;
          filled += 8;
        }
      }
      codes[c] = static_cast<std::uint8_t>(acc & mask);
      acc >>= bits_;
      filled -= bits_;
    }
  }

 private:
  Index rows_ = 0, cols_ = 0;
  int bits_ = 0;
  Index row_bytes_ = 0;
  std::vector<std::uint8_t> bytes_;
};

/// A uniformly quantized (out, in) weight.
struct QuantizedWeight {
  Index rows = 0, cols = 0;
  int bits = 0;
  bool symmetric = false;
  GroupLayout groups;
  PackedCodes codes;
  MatrixF scales;  // (rows, num_groups)
  MatrixF zeros;   // (rows, num_groups), integer-valued, in 0..2^bits-1
  double loss = 0.0;
  LossKind loss_kind = LossKind::kNone;

  QuantizedWeight() = default;
  QuantizedWeight(Index rows_, Index cols_, const QuantSpec& spec)
      : rows(rows_), cols(cols_), bits(spec.bits), symmetric(spec.symmetric),
        groups(cols_, spec.group_size), codes(rows_, cols_, spec.bits),
        scales(MatrixF::Zero(rows_, groups.num_groups)),
        zeros(MatrixF::Zero(rows_, groups.num_groups)) {}

  [[nodiscard]] int code(Index r, Index c) const noexcept { return codes.get(r, c); }

  /// The dequantized value at (r, c).
  [[nodiscard]] float value(Index r, Index c) const noexcept {
    const Index g = groups.group_of(c);
    return scales(r, g) * (static_cast<float>(code(r, c)) - zeros(r, g));
  }

  /// Writes the dequantized (fake-quant) weight into `out` (rows, cols).
  void dequantize_into(Eigen::Ref<MatrixF> out) const {
    require<ShapeError>(out.rows() == rows && out.cols() == cols,
                        "QuantizedWeight::dequantize_into: output is ({}, {}), expected ({}, {})",
                        out.rows(), out.cols(), rows, cols);
    dequantize_rows_into(0, rows, out);
  }

  /// Writes rows [first, first + n) of the dequantized weight into `out` (n, cols); with
  /// `parallel` false on the calling thread only (for callers that run their own threads).
  void dequantize_rows_into(Index first, Index n, Eigen::Ref<MatrixF> out,
                            [[maybe_unused]] bool parallel = true) const {
    require<ShapeError>(first >= 0 && n >= 0 && first + n <= rows && out.rows() == n &&
                            out.cols() == cols,
                        "QuantizedWeight::dequantize_rows_into: rows [{}, {}) into ({}, {}) of a "
                        "({}, {}) weight", first, first + n, out.rows(), out.cols(), rows, cols);
#pragma omp parallel if (parallel && n * cols > (1 << 16))
    {
      std::vector<std::uint8_t> row(static_cast<std::size_t>(cols));
#pragma omp for schedule(static)
      for (Index i = 0; i < n; ++i) {
        const Index r = first + i;
        codes.unpack_row(r, row.data());
        for (Index g = 0; g < groups.num_groups; ++g) {
          const float s = scales(r, g), z = zeros(r, g);
          const Index b = groups.begin(g), w = groups.width(g);
          for (Index c = b; c < b + w; ++c) out(i, c) = s * (static_cast<float>(row[c]) - z);
        }
      }
    }
  }

  /// The dequantized (fake-quant) weight W^, (rows, cols): what evaluation multiplies with.
  [[nodiscard]] MatrixF dequantize() const {
    MatrixF out(rows, cols);
    dequantize_into(out);
    return out;
  }

  /// Exact storage in bits: codes + 16-bit scales + zero points (asymmetric only).
  [[nodiscard]] std::uint64_t storage_bits() const noexcept {
    const auto n_groups = static_cast<std::uint64_t>(rows * groups.num_groups);
    const auto code_bits = static_cast<std::uint64_t>(rows * cols) * static_cast<unsigned>(bits);
    const std::uint64_t zero_bits = symmetric ? 0 : n_groups * static_cast<unsigned>(bits);
    return code_bits + n_groups * kScaleBits + zero_bits;
  }

  /// storage_bits() / (rows * cols): what an average-bits budget counts for this layer.
  [[nodiscard]] double bits_per_weight() const noexcept {
    return rows * cols == 0 ? 0.0
                            : static_cast<double>(storage_bits()) / static_cast<double>(rows * cols);
  }
};

/// Mean over tokens of the squared output error ||(Q - W) x_t||^2, x: (tokens, in).
inline double output_error(WeightRef w, WeightRef q, WeightRef x) {
  require<ShapeError>(w.rows() == q.rows() && w.cols() == q.cols(),
                      "output_error: weight is ({}, {}) but quantized weight is ({}, {})",
                      w.rows(), w.cols(), q.rows(), q.cols());
  require<ShapeError>(x.cols() == w.cols(),
                      "output_error: activations are ({}, {}), expected (tokens, {}) for a "
                      "({}, {}) weight",
                      x.rows(), x.cols(), w.cols(), w.rows(), w.cols());
  if (x.rows() == 0) return 0.0;
  const MatrixF dw = q - w;
  const MatrixF dy = x * dw.transpose();  // (tokens, out)
  return dy.cast<double>().squaredNorm() / static_cast<double>(x.rows());
}

/// sum (Q - W)^2.
inline double weight_sse(WeightRef w, WeightRef q) {
  require<ShapeError>(w.rows() == q.rows() && w.cols() == q.cols(),
                      "weight_sse: weight is ({}, {}) but quantized weight is ({}, {})", w.rows(),
                      w.cols(), q.rows(), q.cols());
  return (q - w).cast<double>().squaredNorm();
}

}  // namespace fragile::quant
