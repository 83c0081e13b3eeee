// model::Transformer<Backend>: the Llama-family decoder (Llama, Llama 3, Qwen2, Mistral,
// llama2.c) as described by a ModelConfig, computing exactly what Hugging Face transformers
// computes in f32: forward over batches of windows [B, T], the next-token NLL through a chunked
// fused log-softmax (memory independent of B*T*V), and the backward pass from the mean token
// cross-entropy to every linear layer's output, streamed to capture observers.
//
// Weights are upcast to f32 once at load (TensorStore::read_f32 rejects NaN/Inf naming the
// tensor). Linear layers can be replaced per call by a WeightOverrides set (fake-quantized
// weights, say) without copying or reloading the model.
//
// Data flow of one block (row b*T + t is token t of window b; C hidden, I intermediate):
//   x (N, C) -> rmsnorm -> xn1 -> q/k/v_proj (+bias) -> rope(q, k) -> GQA attention -> att
//   x += o_proj(att);  x -> rmsnorm -> xn2 -> gate/up_proj -> h = silu(gate) * up
//   x += down_proj(h)
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/finite.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/io/tensor_store.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/config.hpp"
#include "fragile/model/layers/attention.hpp"
#include "fragile/model/layers/cross_entropy.hpp"
#include "fragile/model/layers/embedding.hpp"
#include "fragile/model/layers/linear.hpp"
#include "fragile/model/layers/mlp.hpp"
#include "fragile/model/layers/rmsnorm.hpp"
#include "fragile/model/layers/rope.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fragile::model {

/// Named f32 tensors (HF names) for building a model in memory: tests, benchmarks, converters.
using NamedTensors = std::map<std::string, std::vector<float>, std::less<>>;

/// A batch of token windows, each a sequence of ids; all windows of one call have one length.
using Window = std::vector<std::int32_t>;

struct TransformerOptions {
  /// Accept windows longer than max_position_embeddings (RoPE extrapolates; HF would too).
  bool allow_long_windows = false;
  /// Rows of logits materialised at once by the LM head (memory: rows x vocab floats).
  std::size_t head_chunk_rows = 128;
};

/// A set of replacement weights for linear layers, validated against a model's registry.
/// Views (std::span) must outlive the evaluation; owned matrices live in the set. The set must
/// not outlive the model whose registry it was made from (Transformer::make_overrides()).
class WeightOverrides {
 public:
  explicit WeightOverrides(const std::vector<LinearInfo>& registry) : registry_(&registry) {}

  /// Replaces layer `index` by the (rows, cols) row-major matrix `w` (not copied).
  void set(std::size_t index, std::span<const float> w, std::size_t rows, std::size_t cols) {
    const LinearInfo& li = check(index, w.size(), rows, cols);
    entries_[li.index] = Entry{w.data(), {}};
  }
  /// Replaces layer `index` by `w` (moved into the set).
  void set(std::size_t index, std::vector<float> w, std::size_t rows, std::size_t cols) {
    const LinearInfo& li = check(index, w.size(), rows, cols);
    Entry e;
    e.owned = std::move(w);
    e.data = e.owned.data();
    entries_[li.index] = std::move(e);
  }
  /// By HF name ("model.layers.0.self_attn.q_proj").
  void set(std::string_view name, std::span<const float> w, std::size_t rows, std::size_t cols) {
    set(index_of(name), w, rows, cols);
  }
  void set(std::string_view name, std::vector<float> w, std::size_t rows, std::size_t cols) {
    set(index_of(name), std::move(w), rows, cols);
  }

  void erase(std::size_t index) { entries_.erase(index); }
  void clear() noexcept { entries_.clear(); }
  [[nodiscard]] bool contains(std::size_t index) const { return entries_.contains(index); }
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  [[nodiscard]] bool empty() const noexcept { return entries_.empty(); }
  /// The replacement weights of layer `index`, or null.
  [[nodiscard]] const float* find(std::size_t index) const {
    auto it = entries_.find(index);
    return it == entries_.end() ? nullptr : it->second.data;
  }
  [[nodiscard]] const std::vector<LinearInfo>* registry() const noexcept { return registry_; }

 private:
  struct Entry {
    const float* data = nullptr;
    std::vector<float> owned;
  };

  std::size_t index_of(std::string_view name) const {
    for (const auto& li : *registry_)
      if (li.name == name) return li.index;
    raise<ArgumentError>("weight override: the model has no linear layer named '{}'", name);
  }

  const LinearInfo& check(std::size_t index, std::size_t size, std::size_t rows,
                          std::size_t cols) const {
    require<ArgumentError>(index < registry_->size(),
                           "weight override: linear index {} out of range (model has {})", index,
                           registry_->size());
    const LinearInfo& li = (*registry_)[index];
    require<ShapeError>(rows == li.out_features && cols == li.in_features,
                        "weight override for '{}': weight is [{}, {}], the layer needs [{}, {}]",
                        li.name, rows, cols, li.out_features, li.in_features);
    require<ShapeError>(size == rows * cols,
                        "weight override for '{}': buffer holds {} values, [{}, {}] needs {}",
                        li.name, size, rows, cols, rows * cols);
    return li;
  }

  const std::vector<LinearInfo>* registry_;
  std::map<std::size_t, Entry> entries_;
};

/// One tensor of the model that training updates: its HF name, shape and storage (row-major).
struct Parameter {
  std::string name;
  std::vector<std::size_t> shape;
  std::span<float> value;
  /// Weight decay applies to matrices (embeddings and linears), not to norms or biases.
  [[nodiscard]] bool is_matrix() const noexcept { return shape.size() == 2; }
};

/// Gradients of every parameter, in the order of Transformer::parameters().
struct ParameterGradients {
  std::vector<std::vector<float>> tensors;

  void zero() {
    for (auto& t : tensors) std::fill(t.begin(), t.end(), 0.0f);
  }
  /// The global L2 norm over every tensor (accumulated in double).
  [[nodiscard]] double norm() const {
    double ss = 0.0;
    for (const auto& t : tensors)
      for (float v : t) ss += static_cast<double>(v) * v;
    return std::sqrt(ss);
  }
};

namespace detail {
/// A checkpoint holding blocks the config does not count ("model.layers.N." with N >=
/// num_hidden_layers) is a mismatched config, not weights to ignore.
inline void require_no_extra_blocks(const ModelConfig& c, const io::TensorStore& store) {
  constexpr std::string_view prefix = "model.layers.";
  for (const auto& name : store.names()) {
    if (!name.starts_with(prefix)) continue;
    std::size_t block = 0, k = prefix.size();
    if (k >= name.size() || name[k] < '0' || name[k] > '9') continue;
    for (; k < name.size() && name[k] >= '0' && name[k] <= '9' && block < (1u << 20); ++k)
      block = block * 10 + static_cast<std::size_t>(name[k] - '0');
    require<ConfigError>(block < c.num_hidden_layers,
                         "{}: holds tensor '{}' of block {}, but the config has "
                         "num_hidden_layers = {}; the config does not match the weights",
                         store.description(), name, block, c.num_hidden_layers);
  }
}
}  // namespace detail

template <backend::Backend B = cpu>
class Transformer {
 public:
  template <class T>
  using Buffer = typename B::template Buffer<T>;

  /// Loads every tensor the config names from `store` (HF names), upcasting to f32.
  Transformer(ModelConfig config, const io::TensorStore& store, TransformerOptions options = {})
      : config_(std::move(config)), options_(options) {
    config_.validate(store.description());
    detail::require_no_extra_blocks(config_, store);
    load([&](const std::string& name, std::vector<std::size_t> shape) {
      const auto& info = store.info(name);
      require<ShapeError>(info.shape == shape, "{}: tensor '{}' has shape {}, the config needs {}",
                          store.description(), name, io::shape_string(info.shape),
                          io::shape_string(shape));
      Buffer<float> buf(info.numel());
      store.read_f32(name, std::span<float>(buf.data(), buf.size()));
      return buf;
    });
  }

  /// Takes the named tensors (moved, no copy), checking sizes and finiteness.
  Transformer(ModelConfig config, NamedTensors weights, TransformerOptions options = {})
      : config_(std::move(config)), options_(options) {
    config_.validate("in-memory weights");
    load([&](const std::string& name, std::vector<std::size_t> shape) {
      auto it = weights.find(name);
      require<IoError>(it != weights.end(), "in-memory weights: no tensor named '{}'", name);
      std::size_t numel = 1;
      for (auto d : shape) numel *= d;
      require<ShapeError>(it->second.size() == numel,
                          "in-memory weights: tensor '{}' has {} values, shape {} needs {}", name,
                          it->second.size(), io::shape_string(shape), numel);
      for (std::size_t k = 0; k < numel; ++k)
        if (!std::isfinite(it->second[k]))
          raise<NumericError>("in-memory weights: tensor '{}' holds a non-finite value ({}) at "
                              "flat index {}", name, it->second[k], k);
      Buffer<float> buf(it->second.begin(), it->second.end());
      return buf;
    });
  }

  [[nodiscard]] const ModelConfig& config() const noexcept { return config_; }
  [[nodiscard]] TransformerOptions& options() noexcept { return options_; }
  [[nodiscard]] const TransformerOptions& options() const noexcept { return options_; }

  // ------------------------------------------------------------------ linear-layer registry

  /// Every linear layer, block-major in HF order (q, k, v, o, gate, up, down).
  [[nodiscard]] const std::vector<LinearInfo>& linears() const noexcept { return linears_; }
  /// The linear layer named `name`; ArgumentError if there is none.
  [[nodiscard]] const LinearInfo& linear(std::string_view name) const {
    for (const auto& li : linears_)
      if (li.name == name) return li;
    raise<ArgumentError>("Transformer: no linear layer named '{}'", name);
  }
  /// The FP weight of linear layer `index`, row-major (out, in).
  [[nodiscard]] std::span<const float> weight(std::size_t index) const {
    require<ArgumentError>(index < linears_.size(), "Transformer: linear index {} out of range ({})",
                           index, linears_.size());
    const auto& li = linears_[index];
    const auto& w = blocks_[li.block].w[kind_slot(li.kind)];
    return {w.data(), w.size()};
  }
  /// Total weight parameters of the linear layers.
  [[nodiscard]] std::size_t linear_parameters() const noexcept {
    std::size_t n = 0;
    for (const auto& li : linears_) n += li.parameters();
    return n;
  }
  /// An empty override set for this model.
  [[nodiscard]] WeightOverrides make_overrides() const { return WeightOverrides(linears_); }

  // ------------------------------------------------------------------ forward

  /// Per-token NLL of the next token, (B, T-1) row-major: nll[b, t] = -log p(w[t+1] | w[..t]).
  [[nodiscard]] std::vector<float> token_nll(std::span<const Window> windows,
                                             const WeightOverrides* overrides = nullptr) const {
    const auto [ids, nb, T] = pack(windows, 2);
    const auto hidden = run_forward(ids.data(), nb, T, overrides, nullptr, NoX{});
    std::vector<float> nll(nb * (T - 1));
    std::vector<std::int32_t> labels(nb * T, -1);
    for (std::size_t b = 0; b < nb; ++b)
      for (std::size_t t = 0; t + 1 < T; ++t) labels[b * T + t] = ids[b * T + t + 1];
    head_loop(hidden.data(), nb * T, [&](std::size_t r0, std::size_t rows, float* logits,
                                         const float* lse) {
      for (std::size_t r = 0; r < rows; ++r) {
        const std::size_t row = r0 + r, b = row / T, t = row % T;
        if (t + 1 < T)
          nll[b * (T - 1) + t] = lse[r] - logits[r * vocab() + static_cast<std::size_t>(labels[row])];
      }
    });
    return nll;
  }

  /// Final normalised hidden states (B*T, C): the LM head's input.
  [[nodiscard]] std::vector<float> final_hidden(std::span<const Window> windows,
                                                const WeightOverrides* overrides = nullptr) const {
    const auto [ids, nb, T] = pack(windows, 1);
    const auto h = run_forward(ids.data(), nb, T, overrides, nullptr, NoX{});
    return std::vector<float>(h.begin(), h.end());
  }

  /// logits (rows, V) = hidden (rows, C) W_head^T.
  void head(const float* hidden, std::size_t rows, float* logits) const {
    layers::linear_forward(B{}, logits, hidden, head_weight(), nullptr, rows, config_.hidden_size,
                           vocab());
  }

  /// Full logits (B, T, V). Memory B*T*V floats: for tests and small models.
  [[nodiscard]] std::vector<float> logits(std::span<const Window> windows,
                                          const WeightOverrides* overrides = nullptr) const {
    const auto hidden = final_hidden(windows, overrides);
    const std::size_t rows = hidden.size() / config_.hidden_size;
    std::vector<float> out(rows * vocab());
    head(hidden.data(), rows, out.data());
    return out;
  }

  // ------------------------------------------------------------------ training

  /// Every parameter in HF order (embed_tokens; per block input_layernorm, q/k/v weights and
  /// biases, o_proj, post_attention_layernorm, gate/up/down; norm; lm_head unless tied), with
  /// mutable storage: an optimiser updates the model in place.
  [[nodiscard]] std::vector<Parameter> parameters() {
    std::vector<Parameter> out;
    visit_parameters([&](std::string name, std::vector<std::size_t> shape, Buffer<float>& buf) {
      out.push_back(Parameter{std::move(name), std::move(shape), {buf.data(), buf.size()}});
    });
    return out;
  }

  /// Zeroed gradients, one tensor per parameter.
  [[nodiscard]] ParameterGradients make_gradients() const {
    ParameterGradients g;
    const_cast<Transformer*>(this)->visit_parameters(
        [&](const std::string&, const std::vector<std::size_t>&, Buffer<float>& buf) {
          g.tensors.emplace_back(buf.size(), 0.0f);
        });
    return g;
  }

  /// The mean next-token cross-entropy over every scored position of the batch (HF's loss with
  /// labels = input_ids: B*(T-1) predictions), with its gradient w.r.t. every parameter added
  /// into `grads` (from make_gradients()). Returns the loss.
  double accumulate_gradients(std::span<const Window> windows, ParameterGradients& grads) const {
    std::size_t expected = 0;
    const_cast<Transformer*>(this)->visit_parameters(
        [&](const std::string&, const std::vector<std::size_t>&, Buffer<float>& buf) {
          require<ArgumentError>(expected < grads.tensors.size() &&
                                     grads.tensors[expected].size() == buf.size(),
                                 "accumulate_gradients: gradients were not made for this model "
                                 "(tensor {} differs)", expected);
          ++expected;
        });
    require<ArgumentError>(expected == grads.tensors.size(),
                           "accumulate_gradients: gradients hold {} tensors, the model has {}",
                           grads.tensors.size(), expected);
    const auto [ids, nb, T] = pack(windows, 2);
    CaptureOptions opt;
    opt.labels = LabelSource::kData;
    ParamGradSink sink{this, &grads};
    const double window_loss_sum = run_backward(ids.data(), nb, T, 0, opt, nullptr, sink, &sink);
    return window_loss_sum / static_cast<double>(nb);
  }

  // ------------------------------------------------------------------ capture (forward + backward)

  /// Streams every (selected) linear layer's capture, batch by batch, to the observers. Runs the
  /// backward pass only when an observer needs gradients; then each layer is delivered during
  /// the backward, last block first, with x and g together. Otherwise x (and x^T x) are
  /// delivered during the forward.
  template <CaptureObserver... Obs>
  CaptureSummary capture(std::span<const Window> windows, const CaptureOptions& opt,
                         Obs&... observers) const {
    return capture_with(windows, opt, nullptr, observers...);
  }

  /// capture() of the model with some linear layers overridden.
  template <CaptureObserver... Obs>
  CaptureSummary capture_with(std::span<const Window> windows, const CaptureOptions& opt,
                              const WeightOverrides* overrides, Obs&... observers) const {
    require<ArgumentError>(opt.batch_size > 0, "capture: batch_size must be positive");
    CaptureNeeds needs;
    ((needs = needs | CaptureNeeds(observers.needs())), ...);
    check_windows(windows, opt.labels == LabelSource::kData ? 2 : 1);
    std::vector<char> selected(linears_.size(), opt.layers.empty() ? 1 : 0);
    for (auto l : opt.layers) {
      require<ArgumentError>(l < linears_.size(), "capture: layer index {} out of range ({})", l,
                             linears_.size());
      selected[l] = 1;
    }
    CaptureSummary summary;
    double loss_sum = 0.0;
    for (std::size_t w0 = 0, batch = 0; w0 < windows.size(); w0 += opt.batch_size, ++batch) {
      const std::size_t nb = std::min(opt.batch_size, windows.size() - w0);
      const auto [ids, nb_, T] = pack(windows.subspan(w0, nb), 1);
      BatchCtx ctx{batch, w0, nb, T, opt.labels == LabelSource::kData ? T - 1 : T, needs,
                   &selected};
      Deliverer<Obs...> deliver{this, &ctx, std::tie(observers...), {}};
      if (needs.backward()) {
        loss_sum += run_backward(ids.data(), nb, T, w0, opt, overrides, deliver);
      } else {
        run_forward(ids.data(), nb, T, overrides, nullptr,
                    [&](const LinearInfo& li, const float* x) { deliver(li, x, nullptr); });
      }
      summary.windows += nb;
      summary.batches += 1;
      summary.scored_tokens += nb * ctx.scored;
    }
    summary.mean_window_loss = needs.backward() ? loss_sum / static_cast<double>(summary.windows)
                                                : std::nan("");
    return summary;
  }

 private:
  // Slot of each kind in a block's weight array, in HF order.
  static constexpr std::size_t kind_slot(LinearKind k) noexcept { return static_cast<std::size_t>(k); }

  struct Block {
    Buffer<float> attn_norm, mlp_norm;
    std::array<Buffer<float>, 7> w;
    Buffer<float> bq, bk, bv;  // empty unless attention_bias
  };

  // Activations one block saves for the backward.
  struct Saved {
    Buffer<float> x_in, rstd1, xn1, q, k, v, lse, att, x_mid, rstd2, xn2, gate, up;
  };

  struct NoX {
    void operator()(const LinearInfo&, const float*) const noexcept {}
  };

  struct BatchCtx {
    std::size_t batch_index, first_window, windows, seq_len, scored;
    CaptureNeeds needs;
    const std::vector<char>* selected;
  };

  /// Computes the declared quantities of one layer once and hands them to every observer.
  template <class... Obs>
  struct Deliverer {
    const Transformer* model;
    const BatchCtx* ctx;
    std::tuple<Obs&...> observers;
    // x^T x is shared by layers reading the same input (q/k/v, gate/up): cache per block+input.
    struct {
      std::size_t key = static_cast<std::size_t>(-1);
      Buffer<float> xtx;
    } cache;

    // Layers that read the same input: q/k/v, o, gate/up, down.
    static std::size_t input_group(LinearKind k) noexcept {
      switch (k) {
        case LinearKind::kQ:
        case LinearKind::kK:
        case LinearKind::kV: return 0;
        case LinearKind::kO: return 1;
        case LinearKind::kGate:
        case LinearKind::kUp: return 2;
        case LinearKind::kDown: return 3;
      }
      return 4;
    }

    void operator()(const LinearInfo& li, const float* x, const float* g) {
      if (!(*ctx->selected)[li.index]) return;
      const CaptureNeeds& n = ctx->needs;
      const std::size_t rows = ctx->windows * ctx->seq_len, in = li.in_features,
                        out = li.out_features;
      LayerCapture c;
      c.layer = &li;
      c.batch_index = ctx->batch_index;
      c.first_window = ctx->first_window;
      c.windows = ctx->windows;
      c.seq_len = ctx->seq_len;
      c.scored_positions = ctx->scored;
      c.x = n.x ? x : nullptr;
      c.g = n.g ? g : nullptr;
      if (n.xtx) {
        const std::size_t key = li.block * 8 + input_group(li.kind);
        if (cache.key != key) {
          cache.xtx.resize(in * in);
          backend::Ops<B>::gemm(backend::Trans::kT, backend::Trans::kN, in, in, rows, 1.0f, x, in,
                                x, in, 0.0f, cache.xtx.data(), in);
          cache.key = key;
        }
        c.xtx = cache.xtx.data();
      }
      Buffer<float> wg, wg2;
      if (g && n.weight_grad) {
        wg.resize(out * in);
        layers::linear_backward_weight(B{}, wg.data(), g, x, rows, in, out, false);
        c.weight_grad = wg.data();
      }
      if (g && n.weight_grad_sq) {
        wg2.assign(out * in, 0.0f);
        Buffer<float> one(out * in);
        const std::size_t T = ctx->seq_len;
        for (std::size_t b = 0; b < ctx->windows; ++b) {
          layers::linear_backward_weight(B{}, one.data(), g + b * T * out, x + b * T * in, T, in,
                                         out, false);
          for (std::size_t k = 0; k < one.size(); ++k) wg2[k] += one[k] * one[k];
        }
        c.weight_grad_sq = wg2.data();
      }
      std::apply([&](auto&... o) { (o.observe(c), ...); }, observers);
    }
  };

  [[nodiscard]] std::size_t vocab() const noexcept { return config_.vocab_size; }

  /// fn(name, shape, buffer) for every parameter, in HF's named_parameters() order.
  template <class Fn>
  void visit_parameters(Fn&& fn) {
    const auto& c = config_;
    const std::size_t C = c.hidden_size;
    fn("model.embed_tokens.weight", {c.vocab_size, C}, embed_);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      Block& blk = blocks_[i];
      for (LinearKind k : kAllLinearKinds) {
        const auto [out, in] = linear_shape(c, k);
        const std::string name = linear_name(i, k);
        fn(name + ".weight", {out, in}, blk.w[kind_slot(k)]);
        if (auto* b = bias_of(blk, k); b && !b->empty()) fn(name + ".bias", {out}, *b);
      }
      const std::string p = fmt::format("model.layers.{}.", i);
      fn(p + "input_layernorm.weight", {C}, blk.attn_norm);
      fn(p + "post_attention_layernorm.weight", {C}, blk.mlp_norm);
    }
    fn("model.norm.weight", {C}, final_norm_);
    if (!c.tie_word_embeddings) fn("lm_head.weight", {c.vocab_size, C}, lm_head_);
  }

  template <class Blk>  // Block or const Block
  static auto* bias_of(Blk& blk, LinearKind k) noexcept {
    using Ptr = decltype(&blk.bq);
    switch (k) {
      case LinearKind::kQ: return &blk.bq;
      case LinearKind::kK: return &blk.bk;
      case LinearKind::kV: return &blk.bv;
      default: return Ptr{nullptr};
    }
  }

  /// Receives the backward's linear captures and adds every parameter's gradient into a
  /// ParameterGradients (the linears here; norms, embedding and head inside run_backward).
  struct ParamGradSink {
    ParamGradSink(const Transformer* m, ParameterGradients* g) : model(m) {
      std::size_t n = 0;
      const_cast<Transformer*>(m)->visit_parameters(
          [&](const std::string&, const std::vector<std::size_t>&, Buffer<float>& buf) {
            by_param.emplace(buf.data(), g->tensors[n++].data());
          });
    }
    /// The gradient storage of parameter `p`.
    float* of(const Buffer<float>& p) const { return by_param.at(p.data()); }

    void operator()(const LinearInfo& li, const float* x, const float* g) {
      const Block& blk = model->blocks_[li.block];
      layers::linear_backward_weight(B{}, of(blk.w[kind_slot(li.kind)]), g, x, rows,
                                     li.in_features, li.out_features, true);
      if (li.has_bias)
        layers::linear_backward_bias(B{}, of(*bias_of(blk, li.kind)), g, rows, li.out_features);
    }

    const Transformer* model;
    std::size_t rows = 0;  // tokens of the current batch, set by run_backward
    std::unordered_map<const float*, float*> by_param;
  };
  [[nodiscard]] const float* head_weight() const noexcept {
    return config_.tie_word_embeddings ? embed_.data() : lm_head_.data();
  }

  const float* weight_of(std::size_t block, LinearKind k, const WeightOverrides* ov) const {
    if (ov) {
      if (const float* p = ov->find(block * 7 + kind_slot(k))) return p;
    }
    return blocks_[block].w[kind_slot(k)].data();
  }

  template <class Get>
  void load(Get&& get) {
    const auto& c = config_;
    const std::size_t C = c.hidden_size;
    embed_ = get("model.embed_tokens.weight", {c.vocab_size, C});
    blocks_.resize(c.num_hidden_layers);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
      auto& blk = blocks_[i];
      const std::string p = fmt::format("model.layers.{}.", i);
      blk.attn_norm = get(p + "input_layernorm.weight", {C});
      blk.mlp_norm = get(p + "post_attention_layernorm.weight", {C});
      for (LinearKind k : kAllLinearKinds) {
        const auto [out, in] = linear_shape(c, k);
        const std::string name = linear_name(i, k);
        blk.w[kind_slot(k)] = get(name + ".weight", {out, in});
        const bool bias = c.attention_bias &&
                          (k == LinearKind::kQ || k == LinearKind::kK || k == LinearKind::kV);
        if (bias) {
          auto& dst = k == LinearKind::kQ ? blk.bq : (k == LinearKind::kK ? blk.bk : blk.bv);
          dst = get(name + ".bias", {out});
        }
        linears_.push_back(LinearInfo{name, linears_.size(), i, k, in, out, bias});
      }
    }
    final_norm_ = get("model.norm.weight", {C});
    if (!c.tie_word_embeddings) lm_head_ = get("lm_head.weight", {c.vocab_size, C});
    inv_freq_ = layers::rope_inv_freq(c);
  }

  /// Validates the windows: non-empty, one length >= min_len, within max_position_embeddings
  /// (unless allowed), every id inside the vocabulary.
  void check_windows(std::span<const Window> windows, std::size_t min_len) const {
    require<ArgumentError>(!windows.empty(), "Transformer: empty batch (no windows)");
    const std::size_t T = windows[0].size();
    for (std::size_t w = 0; w < windows.size(); ++w) {
      require<ArgumentError>(windows[w].size() == T,
                             "Transformer: window {} has {} tokens, window 0 has {} (one batch "
                             "needs one length)", w, windows[w].size(), T);
      for (std::size_t t = 0; t < T; ++t) {
        const auto id = windows[w][t];
        require<ArgumentError>(id >= 0 && static_cast<std::size_t>(id) < vocab(),
                               "Transformer: token id {} at window {} position {} is outside the "
                               "vocabulary [0, {})", id, w, t, vocab());
      }
    }
    require<ArgumentError>(T >= min_len, "Transformer: windows of {} tokens, need at least {}", T,
                           min_len);
    require<ArgumentError>(options_.allow_long_windows || T <= config_.max_position_embeddings,
                           "Transformer: windows of {} tokens exceed max_position_embeddings = {} "
                           "(use --seqlen {} or less; in code, TransformerOptions::allow_long_windows "
                           "allows longer windows)", T, config_.max_position_embeddings,
                           config_.max_position_embeddings);
  }

  struct Packed {
    std::vector<std::int32_t> ids;
    std::size_t windows, seq_len;
  };
  Packed pack(std::span<const Window> windows, std::size_t min_len) const {
    check_windows(windows, min_len);
    Packed p{{}, windows.size(), windows[0].size()};
    p.ids.reserve(p.windows * p.seq_len);
    for (const auto& w : windows) p.ids.insert(p.ids.end(), w.begin(), w.end());
    return p;
  }

  /// NumericError when the residual stream (N rows of hidden_size) after `stage` of `block`
  /// holds a NaN or infinity, naming the block, the stage and the first bad position. Checked
  /// where it arises: a NaN there would otherwise surface only as a garbage statistic.
  void require_finite_residual(const float* x, std::size_t N, std::size_t T, std::size_t block,
                               const char* stage) const {
    const std::size_t C = config_.hidden_size, bad = first_non_finite(x, N * C);
    if (bad == N * C) return;
    const std::size_t row = bad / C;
    raise<NumericError>("forward: the hidden state after the {} of block {} (model.layers.{}) is "
                        "not finite ({} at window {} of the batch, position {}): a weight or "
                        "activation overflowed", stage, block, block, x[bad], row / T, row % T);
  }

  /// Runs the blocks and the final norm; returns the final hidden states (N, C). With `saved`,
  /// keeps what the backward needs (one Saved per block plus the last residual and its rstd in
  /// saved->back()). `on_x(layer, x)` sees each linear layer's input.
  template <class OnX>
  Buffer<float> run_forward(const std::int32_t* ids, std::size_t nb, std::size_t T,
                                 const WeightOverrides* ov, std::vector<Saved>* saved,
                                 OnX&& on_x) const {
    require<ArgumentError>(!ov || ov->registry() == &linears_,
                           "Transformer: weight overrides were made for another model");
    const auto& c = config_;
    const std::size_t N = nb * T, C = c.hidden_size, I = c.intermediate_size;
    const std::size_t qd = c.q_dim(), kd = c.kv_dim(), L = c.num_hidden_layers;
    const float eps = static_cast<float>(c.rms_norm_eps);
    const auto rope = layers::rope_table(inv_freq_, T);
    const layers::AttentionShape ash{nb, T, c.num_attention_heads, c.num_key_value_heads,
                                     c.head_dim, c.sliding_window};
    const B be{};

    Buffer<float> x(N * C);
    layers::embedding_forward(be, x.data(), ids, embed_.data(), N, C);
    // Scratch for the forward-only path (the saving path writes into Saved instead).
    Buffer<float> xn, q, k, v, att, gate, up, lse;
    if (!saved) {
      xn.resize(N * C);
      q.resize(N * qd);
      k.resize(N * kd);
      v.resize(N * kd);
      att.resize(N * qd);
      gate.resize(N * I);
      up.resize(N * I);
    } else {
      saved->assign(L + 1, Saved{});
    }
    auto buf = [&](Buffer<float>& scratch, Buffer<float>& keep, std::size_t n) {
      if (!saved) return scratch.data();
      keep.resize(n);
      return keep.data();
    };
    for (std::size_t i = 0; i < L; ++i) {
      const Block& blk = blocks_[i];
      Saved* s = saved ? &(*saved)[i] : nullptr;
      Saved dummy;
      Saved& sv = s ? *s : dummy;
      if (s) s->x_in = x;
      float* xn1 = buf(xn, sv.xn1, N * C);
      float* rstd1 = s ? (sv.rstd1.resize(N), sv.rstd1.data()) : nullptr;
      layers::rmsnorm_forward(be, xn1, rstd1, x.data(), blk.attn_norm.data(), N, C, eps);
      float* qp = buf(q, sv.q, N * qd);
      float* kp = buf(k, sv.k, N * kd);
      float* vp = buf(v, sv.v, N * kd);
      const LinearInfo* li = &linears_[i * 7];
      on_x(li[0], xn1);
      on_x(li[1], xn1);
      on_x(li[2], xn1);
      layers::linear_forward(be, qp, xn1, weight_of(i, LinearKind::kQ, ov),
                             blk.bq.empty() ? nullptr : blk.bq.data(), N, C, qd);
      layers::linear_forward(be, kp, xn1, weight_of(i, LinearKind::kK, ov),
                             blk.bk.empty() ? nullptr : blk.bk.data(), N, C, kd);
      layers::linear_forward(be, vp, xn1, weight_of(i, LinearKind::kV, ov),
                             blk.bv.empty() ? nullptr : blk.bv.data(), N, C, kd);
      layers::rope_forward(be, qp, rope, N, T, c.num_attention_heads, c.head_dim, c.rope_style);
      layers::rope_forward(be, kp, rope, N, T, c.num_key_value_heads, c.head_dim, c.rope_style);
      float* attp = buf(att, sv.att, N * qd);
      float* lsep = s ? (sv.lse.resize(nb * c.num_attention_heads * T), sv.lse.data()) : nullptr;
      layers::attention_forward(be, attp, lsep, qp, kp, vp, ash);
      on_x(li[3], attp);
      backend::Ops<B>::gemm(backend::Trans::kN, backend::Trans::kT, N, C, qd, 1.0f, attp, qd,
                            weight_of(i, LinearKind::kO, ov), qd, 1.0f, x.data(), C);
      require_finite_residual(x.data(), N, T, i, "attention (self_attn)");
      if (s) s->x_mid = x;
      float* xn2 = buf(xn, sv.xn2, N * C);
      float* rstd2 = s ? (sv.rstd2.resize(N), sv.rstd2.data()) : nullptr;
      layers::rmsnorm_forward(be, xn2, rstd2, x.data(), blk.mlp_norm.data(), N, C, eps);
      float* gp = buf(gate, sv.gate, N * I);
      float* up_ = buf(up, sv.up, N * I);
      on_x(li[4], xn2);
      on_x(li[5], xn2);
      layers::linear_forward(be, gp, xn2, weight_of(i, LinearKind::kGate, ov), nullptr, N, C, I);
      layers::linear_forward(be, up_, xn2, weight_of(i, LinearKind::kUp, ov), nullptr, N, C, I);
      // h: into the forward scratch `gate` buffer when not saving, else a temporary.
      Buffer<float> h_tmp;
      float* h = saved ? (h_tmp.resize(N * I), h_tmp.data()) : gate.data();
      layers::swiglu_forward(be, h, gp, up_, N * I);
      on_x(li[6], h);
      backend::Ops<B>::gemm(backend::Trans::kN, backend::Trans::kT, N, C, I, 1.0f, h, I,
                            weight_of(i, LinearKind::kDown, ov), I, 1.0f, x.data(), C);
      require_finite_residual(x.data(), N, T, i, "MLP (mlp)");
    }
    Buffer<float> out(N * C);
    float* rstd_f = nullptr;
    if (saved) {
      auto& last = (*saved)[L];
      last.x_in = x;
      last.rstd1.resize(N);
      rstd_f = last.rstd1.data();
    }
    layers::rmsnorm_forward(be, out.data(), rstd_f, x.data(), final_norm_.data(), N, C, eps);
    return out;
  }

  /// Runs the LM head over `rows` hidden rows in chunks: fn(first_row, rows, logits, lse) with
  /// logits (rows, V) that fn may overwrite.
  template <class Fn>
  void head_loop(const float* hidden, std::size_t rows, Fn&& fn) const {
    const std::size_t chunk = std::max<std::size_t>(1, options_.head_chunk_rows);
    Buffer<float> logits(std::min(chunk, rows) * vocab());
    Buffer<float> lse(std::min(chunk, rows));
    for (std::size_t r0 = 0; r0 < rows; r0 += chunk) {
      const std::size_t n = std::min(chunk, rows - r0);
      head(hidden + r0 * config_.hidden_size, n, logits.data());
      layers::logsumexp_rows(B{}, lse.data(), nullptr, logits.data(), n, vocab());
      fn(r0, n, logits.data(), lse.data());
    }
  }

  /// Forward with saving, loss, backward through every block; delivers captures. Returns the
  /// sum over the batch's windows of the window mean cross-entropy.
  template <class Deliver>
  double run_backward(const std::int32_t* ids, std::size_t nb, std::size_t T,
                      std::size_t first_window, const CaptureOptions& opt,
                      const WeightOverrides* ov, Deliver& deliver,
                      ParamGradSink* pg = nullptr) const {
    const auto& c = config_;
    const std::size_t N = nb * T, C = c.hidden_size, I = c.intermediate_size;
    const std::size_t qd = c.q_dim(), kd = c.kv_dim(), L = c.num_hidden_layers, V = vocab();
    const B be{};
    std::vector<Saved> saved;
    const Buffer<float> hidden = run_forward(ids, nb, T, ov, &saved, NoX{});

    // Loss and its gradient w.r.t. the final hidden states, chunk by chunk.
    const bool data = opt.labels == LabelSource::kData;
    const std::size_t scored = data ? T - 1 : T;
    // Captures see d(window mean)/dy; parameter gradients are of the batch mean (HF's loss).
    const float scale = 1.0f / static_cast<float>(pg ? scored * nb : scored);
    if (pg) pg->rows = N;
    Buffer<float> dhidden(N * C);
    std::vector<double> window_nll(nb, 0.0);
    std::vector<std::int32_t> labels;
    std::vector<float> scales;
    const Rng base(opt.seed);
    head_loop(hidden.data(), N, [&](std::size_t r0, std::size_t rows, float* logits,
                                    const float* lse) {
      labels.assign(rows, -1);
      scales.assign(rows, scale);
      if (data) {
        for (std::size_t r = 0; r < rows; ++r) {
          const std::size_t row = r0 + r;
          if (row % T + 1 < T) labels[r] = ids[row + 1];
        }
      } else {
#pragma omp parallel for schedule(static) if (rows * V >= backend::kCpuParallelMin)
        for (std::size_t r = 0; r < rows; ++r) {
          const std::size_t row = r0 + r;
          Rng rng = base.fork((first_window + row / T) * T + row % T);
          const float* lr = logits + r * V;
          const double u = rng.uniform();
          double acc = 0.0, total = 0.0;
          for (std::size_t j = 0; j < V; ++j) total += std::exp(static_cast<double>(lr[j] - lse[r]));
          std::size_t pick = V - 1;
          for (std::size_t j = 0; j < V; ++j) {
            acc += std::exp(static_cast<double>(lr[j] - lse[r]));
            if (u * total < acc) {
              pick = j;
              break;
            }
          }
          labels[r] = static_cast<std::int32_t>(pick);
        }
      }
      for (std::size_t r = 0; r < rows; ++r)
        if (labels[r] >= 0)
          window_nll[(r0 + r) / T] +=
              static_cast<double>(lse[r]) - logits[r * V + static_cast<std::size_t>(labels[r])];
      layers::cross_entropy_backward_rows(be, logits, lse, labels.data(), scales.data(), rows, V);
      if (pg)
        layers::linear_backward_weight(
            be, pg->of(c.tie_word_embeddings ? embed_ : lm_head_), logits,
            hidden.data() + r0 * C, rows, C, V, true);
      layers::linear_backward_input(be, dhidden.data() + r0 * C, logits, head_weight(), rows, C, V,
                                    false);
    });
    double loss = 0.0;
    for (double s : window_nll) loss += s / static_cast<double>(scored);

    const float* w_final = final_norm_.data();
    Buffer<float> dx(N * C), dxn(N * C), h(N * I), dh(N * I), dgate(N * I), dup(N * I);
    Buffer<float> datt(N * qd), dq(N * qd), dk(N * kd), dv(N * kd);
    layers::rmsnorm_backward(be, dx.data(), pg ? pg->of(final_norm_) : nullptr, dhidden.data(),
                             saved[L].x_in.data(), w_final,
                             saved[L].rstd1.data(), N, C, false);
    const auto rope = layers::rope_table(inv_freq_, T);
    const layers::AttentionShape ash{nb, T, c.num_attention_heads, c.num_key_value_heads,
                                     c.head_dim, c.sliding_window};
    for (std::size_t i = L; i-- > 0;) {
      const Block& blk = blocks_[i];
      Saved& s = saved[i];
      const LinearInfo* li = &linears_[i * 7];
      // MLP: dx holds dL/d(block output).
      layers::swiglu_forward(be, h.data(), s.gate.data(), s.up.data(), N * I);
      deliver(li[6], h.data(), dx.data());
      layers::linear_backward_input(be, dh.data(), dx.data(), weight_of(i, LinearKind::kDown, ov),
                                    N, I, C, false);
      layers::swiglu_backward(be, dgate.data(), dup.data(), dh.data(), s.gate.data(), s.up.data(),
                              N * I);
      deliver(li[4], s.xn2.data(), dgate.data());
      deliver(li[5], s.xn2.data(), dup.data());
      layers::linear_backward_input(be, dxn.data(), dgate.data(),
                                    weight_of(i, LinearKind::kGate, ov), N, C, I, false);
      layers::linear_backward_input(be, dxn.data(), dup.data(), weight_of(i, LinearKind::kUp, ov),
                                    N, C, I, true);
      layers::rmsnorm_backward(be, dx.data(), pg ? pg->of(blk.mlp_norm) : nullptr, dxn.data(),
                               s.x_mid.data(),
                               blk.mlp_norm.data(), s.rstd2.data(), N, C, true);
      s.gate = {};
      s.up = {};
      // Attention: dx holds dL/d(x_mid).
      deliver(li[3], s.att.data(), dx.data());
      layers::linear_backward_input(be, datt.data(), dx.data(), weight_of(i, LinearKind::kO, ov),
                                    N, qd, C, false);
      layers::attention_backward(be, dq.data(), dk.data(), dv.data(), datt.data(), s.att.data(),
                                 s.lse.data(), s.q.data(), s.k.data(), s.v.data(), ash);
      layers::rope_backward(be, dq.data(), rope, N, T, c.num_attention_heads, c.head_dim,
                            c.rope_style);
      layers::rope_backward(be, dk.data(), rope, N, T, c.num_key_value_heads, c.head_dim,
                            c.rope_style);
      deliver(li[0], s.xn1.data(), dq.data());
      deliver(li[1], s.xn1.data(), dk.data());
      deliver(li[2], s.xn1.data(), dv.data());
      layers::linear_backward_input(be, dxn.data(), dq.data(), weight_of(i, LinearKind::kQ, ov), N,
                                    C, qd, false);
      layers::linear_backward_input(be, dxn.data(), dk.data(), weight_of(i, LinearKind::kK, ov), N,
                                    C, kd, true);
      layers::linear_backward_input(be, dxn.data(), dv.data(), weight_of(i, LinearKind::kV, ov), N,
                                    C, kd, true);
      layers::rmsnorm_backward(be, dx.data(), pg ? pg->of(blk.attn_norm) : nullptr, dxn.data(),
                               s.x_in.data(),
                               blk.attn_norm.data(), s.rstd1.data(), N, C, true);
      s = Saved{};
    }
    if (pg) layers::embedding_backward(be, pg->of(embed_), dx.data(), ids, N, C);
    return loss;
  }

  ModelConfig config_;
  TransformerOptions options_;
  Buffer<float> embed_, final_norm_, lm_head_;
  std::vector<Block> blocks_;
  std::vector<LinearInfo> linears_;
  std::vector<float> inv_freq_;
};

}  // namespace fragile::model
