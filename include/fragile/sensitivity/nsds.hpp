// NSDS-style data-free sensitivity (Zhang et al., "Beyond Outliers: A Data-Free Layer-wise
// Mixed-Precision Quantization Approach Driven by Numerical and Structural Dual-Sensitivity").
//
// Only the paper's abstract is public, so this is a documented reconstruction; every choice is
// a field of NsdsOptions:
//   numerical vulnerability NV  = excess kurtosis of the module's weights (heavy tails / outliers
//                                 stretch the quantization grid), Fisher definition, biased
//                                 moments as scipy.stats.kurtosis(fisher=True, bias=True);
//   structural expressiveness SE = normalised spectral entropy of the singular values,
//                                 H(p) / log(rank), p_i = s_i / sum_j s_j (or s_i^2 with
//                                 kSquared): a weight that uses many directions has no
//                                 low-rank slack to absorb rounding noise;
//   MAD-sigmoid                  = sigmoid((v - median) / (1.4826 MAD)) across all modules
//                                 (robust to the few extreme modules; MAD = 0 gives 0.5);
//   Soft-OR                      = 1 - prod_k (1 - w_k s_k) over the normalised terms, so a
//                                 module is sensitive if either view says so.
// Role weights: NSDS splits a block into "detectors" (q, k, gate, up: read the residual stream)
// and "writers" (v, o, down: write into it); role_weight scales the Soft-OR inputs by role.
//
// @article{zhang2025nsds, title={Beyond Outliers: A Data-Free Layer-wise Mixed-Precision
//   Quantization Approach Driven by Numerical and Structural Dual-Sensitivity},
//   author={Zhang, Hengyuan and Chen, Xinrong and Su, Zunhai and others}, year={2025}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

namespace fragile::sensitivity {

/// Excess kurtosis with biased moments: m4 / m2^2 - 3 (scipy.stats.kurtosis defaults).
inline double excess_kurtosis(std::span<const float> w) {
  require<ArgumentError>(w.size() >= 2, "excess_kurtosis: needs at least 2 values, got {}",
                         w.size());
  long double mean = 0;
  for (float v : w) mean += v;
  mean /= static_cast<long double>(w.size());
  long double m2 = 0, m4 = 0;
  for (float v : w) {
    const long double d = v - mean, d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= static_cast<long double>(w.size());
  m4 /= static_cast<long double>(w.size());
  require<NumericError>(m2 > 0, "excess_kurtosis: the {} values are constant", w.size());
  return static_cast<double>(m4 / (m2 * m2) - 3.0L);
}

enum class SpectrumWeighting { kSingularValues, kSquared };

/// Singular values of a row-major (rows x cols) matrix, descending, from the eigenvalues of the
/// smaller Gram matrix (in double: cheaper than an SVD for the tall LLM shapes).
inline std::vector<double> singular_values(const float* w, std::size_t rows, std::size_t cols) {
  require<ArgumentError>(rows > 0 && cols > 0, "singular_values: empty matrix ({} x {})", rows,
                         cols);
  const MatrixD a = as_matrix(w, rows, cols).cast<double>();
  const MatrixD gram = rows >= cols ? MatrixD(a.transpose() * a) : MatrixD(a * a.transpose());
  Eigen::SelfAdjointEigenSolver<MatrixD> solver(gram, Eigen::EigenvaluesOnly);
  require<NumericError>(solver.info() == Eigen::Success,
                        "singular_values: eigen-solver failed on a {} x {} matrix", rows, cols);
  std::vector<double> s;
  s.reserve(static_cast<std::size_t>(solver.eigenvalues().size()));
  for (double e : solver.eigenvalues()) s.push_back(std::sqrt(std::max(0.0, e)));
  std::sort(s.rbegin(), s.rend());
  return s;
}

/// Normalised spectral entropy in [0, 1]: 1 = all singular values equal, 0 = rank one.
inline double spectral_entropy(std::span<const double> singular,
                               SpectrumWeighting weighting = SpectrumWeighting::kSingularValues) {
  require<ArgumentError>(singular.size() >= 2, "spectral_entropy: needs >= 2 singular values");
  double total = 0;
  for (double s : singular) total += weighting == SpectrumWeighting::kSquared ? s * s : s;
  require<NumericError>(total > 0, "spectral_entropy: all singular values are zero");
  double h = 0;
  for (double s : singular) {
    const double p = (weighting == SpectrumWeighting::kSquared ? s * s : s) / total;
    if (p > 0) h -= p * std::log(p);
  }
  return h / std::log(static_cast<double>(singular.size()));
}

/// Median of a copy of `v`.
inline double median(std::vector<double> v) {
  require<ArgumentError>(!v.empty(), "median: no values");
  const std::size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  const double lower = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lower + upper);
}

/// sigmoid((v - median) / (1.4826 * MAD)) elementwise; all 0.5 when MAD is zero.
inline std::vector<double> mad_sigmoid(std::span<const double> v) {
  const double med = median(std::vector<double>(v.begin(), v.end()));
  std::vector<double> dev(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) dev[i] = std::abs(v[i] - med);
  const double mad = 1.482602218505602 * median(dev);  // consistent with sigma for normal data
  std::vector<double> out(v.size(), 0.5);
  if (mad > 0)
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = 1.0 / (1.0 + std::exp(-(v[i] - med) / mad));
  return out;
}

/// 1 - prod(1 - p_k) for probabilities p_k in [0, 1].
inline double soft_or(std::span<const double> p) {
  double keep = 1.0;
  for (double x : p) {
    require<ArgumentError>(x >= 0.0 && x <= 1.0, "soft_or: input {} outside [0, 1]", x);
    keep *= 1.0 - x;
  }
  return 1.0 - keep;
}

struct NsdsOptions {
  SpectrumWeighting spectrum = SpectrumWeighting::kSingularValues;
  double numerical_weight = 1.0;   ///< multiplies the normalised NV before Soft-OR
  double structural_weight = 1.0;  ///< multiplies the normalised SE before Soft-OR
  double detector_weight = 1.0;    ///< role weight of q, k, gate, up
  double writer_weight = 1.0;      ///< role weight of v, o, down
};

/// One module's weight (row-major out x in) and its role.
struct NsdsModule {
  std::string name;
  const float* weight = nullptr;
  std::size_t rows = 0, cols = 0;
  bool writer = false;  ///< v/o/down write into the residual stream
};

struct NsdsScore {
  std::string name;
  double numerical = 0, structural = 0;              ///< raw NV (kurtosis) and SE (entropy)
  double numerical_norm = 0, structural_norm = 0;    ///< after MAD-sigmoid across modules
  double score = 0;                                  ///< Soft-OR; higher = more sensitive
};

/// NSDS scores of every module, normalised across the given set (pass all linears of a model).
inline std::vector<NsdsScore> nsds_scores(std::span<const NsdsModule> modules,
                                          const NsdsOptions& options = {}) {
  require<ArgumentError>(modules.size() >= 2, "nsds_scores: needs at least 2 modules, got {}",
                         modules.size());
  for (double w : {options.numerical_weight, options.structural_weight, options.detector_weight,
                   options.writer_weight})
    require<ConfigError>(w >= 0.0 && w <= 1.0, "NsdsOptions: weights must lie in [0, 1], got {}", w);
  std::vector<NsdsScore> out(modules.size());
  std::vector<double> nv(modules.size()), se(modules.size());
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const auto& m = modules[i];
    require<ArgumentError>(m.weight != nullptr && m.rows > 0 && m.cols > 0,
                           "nsds_scores: module '{}' has no weight data", m.name);
    out[i].name = m.name;
    try {
      nv[i] = out[i].numerical = excess_kurtosis({m.weight, m.rows * m.cols});
      const auto s = singular_values(m.weight, m.rows, m.cols);
      se[i] = out[i].structural = spectral_entropy(s, options.spectrum);
    } catch (const NumericError& e) {
      // e.g. an all-zero layer: its kurtosis and spectrum are undefined, so NSDS cannot rank it.
      raise<NumericError>("NSDS of layer '{}' ({} x {}): {}", m.name, m.rows, m.cols, e.what());
    }
  }
  const auto nv_n = mad_sigmoid(nv), se_n = mad_sigmoid(se);
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const double role = modules[i].writer ? options.writer_weight : options.detector_weight;
    out[i].numerical_norm = nv_n[i];
    out[i].structural_norm = se_n[i];
    const double terms[] = {role * options.numerical_weight * nv_n[i],
                            role * options.structural_weight * se_n[i]};
    out[i].score = soft_or(terms);
  }
  return out;
}

}  // namespace fragile::sensitivity
