// model::Transformer<Backend>: the Llama-family decoder (Llama, Llama 3, Qwen2, Mistral,
// llama2.c) as described by a ModelConfig, computing exactly what Hugging Face transformers
// computes in f32: forward over batches of windows [B, T], the next-token NLL through a chunked
// LM head (memory independent of B*T*V), and the backward pass from the mean token
// cross-entropy to every linear layer's output, streamed to capture observers.
//
// Written once against the backend seam (backend/backend.hpp): weights, activations and scratch
// live in B's memory, and only token ids, labels and per-row sums cross to the host.
// Weights are upcast to f32 once at load (TensorStore::read_f32 rejects NaN/Inf naming the
// tensor). Linear layers can be replaced per call by a WeightOverrides set (fake-quantized
// weights, say) without copying or reloading the model. One block's forward and backward are in
// model/block.hpp, the LM head and the loss in model/lm_head.hpp, a capture's delivery in
// model/capture_delivery.hpp.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/error.hpp"
#include "fragile/io/tensor_store.hpp"
#include "fragile/model/block.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/capture_delivery.hpp"
#include "fragile/model/config.hpp"
#include "fragile/model/linear.hpp"
#include "fragile/model/linear_registry.hpp"
#include "fragile/model/lm_head.hpp"
#include "fragile/model/parameters.hpp"
#include "fragile/model/rope.hpp"
#include "fragile/model/weight_overrides.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fragile::model {

/// The token ids of one window; all windows of one call have one length.
using TokenIds = std::vector<std::int32_t>;

struct TransformerOptions {
  /// Accept windows longer than max_position_embeddings (RoPE extrapolates; HF would too).
  bool allow_long_windows = false;
  /// Rows of logits materialised at once by the LM head (memory: rows x vocab floats).
  std::size_t head_chunk_rows = 128;
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

template <backend::Backend B>
class Transformer {
 public:
  template <class T>
  using Buffer = typename B::template Buffer<T>;
  using Ops = backend::Ops<B>;

  /// Loads every tensor the config names from `store` (HF names), upcasting to f32.
  Transformer(ModelConfig config, const io::TensorStore& store, TransformerOptions options = {})
      : config_(std::move(config)), options_(options) {
    config_.validate(store.description());
    detail::require_no_extra_blocks(config_, store);
    std::vector<float> host;
    load([&](const std::string& name, std::vector<std::size_t> shape) {
      const auto& info = store.info(name);
      require<ShapeError>(info.shape == shape, "{}: tensor '{}' has shape {}, the config needs {}",
                          store.description(), name, io::shape_string(info.shape),
                          io::shape_string(shape));
      host.resize(info.numel());
      store.read_f32(name, std::span<float>(host.data(), host.size()));
      return std::span<const float>(host);
    });
  }

  /// Takes the named tensors, checking sizes and finiteness.
  Transformer(ModelConfig config, NamedTensors weights, TransformerOptions options = {})
      : config_(std::move(config)), options_(options) {
    config_.validate("in-memory weights");
    // load() copies each tensor before asking for the next, so the previous one is freed then:
    // the host copy and the backend's never both hold the whole model.
    std::string previous;
    load([&](const std::string& name, std::vector<std::size_t> shape) {
      if (!previous.empty()) weights.erase(previous);
      previous = name;
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
      return std::span<const float>(it->second);
    });
  }

  [[nodiscard]] const ModelConfig& config() const noexcept { return config_; }
  [[nodiscard]] TransformerOptions& options() noexcept { return options_; }
  [[nodiscard]] const TransformerOptions& options() const noexcept { return options_; }

  // ------------------------------------------------------------------ linear-layer registry

  /// Every linear layer, block-major in HF order (q, k, v, o, gate, up, down).
  [[nodiscard]] const std::vector<LinearInfo>& linears() const noexcept { return registry_.all(); }
  /// The registry, with lookups by name and by (block, kind).
  [[nodiscard]] const LinearRegistry& registry() const noexcept { return registry_; }
  /// The linear layer named `name`; ArgumentError if there is none.
  [[nodiscard]] const LinearInfo& linear(std::string_view name) const {
    return registry_.named(name);
  }
  /// The FP weight of linear layer `index`, row-major (out, in), in host memory (a view of the
  /// model's weight on a host backend; a copy kept at load otherwise).
  [[nodiscard]] std::span<const float> weight(std::size_t index) const {
    require<ArgumentError>(index < registry_.size(),
                           "Transformer: linear index {} out of range ({})", index,
                           registry_.size());
    if constexpr (B::memory == backend::Memory::kHost) {
      const auto& li = registry_.all()[index];
      const auto& w = blocks_[li.block].weight(li.kind);
      return {w.data(), w.size()};
    } else {
      return host_linears_[index];
    }
  }
  /// Total weight parameters of the linear layers.
  [[nodiscard]] std::size_t linear_parameters() const noexcept {
    std::size_t n = 0;
    for (const auto& li : registry_.all()) n += li.parameters();
    return n;
  }
  /// An empty override set for this model.
  [[nodiscard]] WeightOverrides make_overrides() const { return WeightOverrides(registry_.all()); }

  // ------------------------------------------------------------------ forward

  /// Final normalised hidden states (B*T, C) in backend memory: the LM head's input.
  [[nodiscard]] Buffer<float> hidden_states(std::span<const TokenIds> windows,
                                            const WeightOverrides* overrides = nullptr) const {
    const auto p = pack(windows, 1);
    return run_forward(p, overrides, nullptr, NoX{});
  }

  /// final hidden states, copied to the host.
  [[nodiscard]] std::vector<float> final_hidden(std::span<const TokenIds> windows,
                                                const WeightOverrides* overrides = nullptr) const {
    return to_host(hidden_states(windows, overrides));
  }

  /// The LM head over chunks of hidden rows (backend memory); see LmHead.
  [[nodiscard]] LmHead<B> lm_head() const noexcept {
    return LmHead<B>{head_weight(), config_.hidden_size, vocab(),
                     std::max<std::size_t>(1, options_.head_chunk_rows)};
  }

  /// logits (rows, V) = hidden (rows, C) W_head^T, both in backend memory.
  void head(const float* hidden, std::size_t rows, float* logits) const {
    lm_head().logits(hidden, rows, logits);
  }

  /// Per-token NLL of the next token on the host, (B, T-1) row-major:
  /// nll[b, t] = -log p(w[t+1] | w[..t]).
  [[nodiscard]] std::vector<double> token_nll(std::span<const TokenIds> windows,
                                              const WeightOverrides* overrides = nullptr) const {
    const auto p = pack(windows, 2);
    const std::size_t nb = p.windows, T = p.seq_len, rows = nb * T;
    const auto hidden = run_forward(p, overrides, nullptr, NoX{});
    std::vector<double> nll(nb * (T - 1));
    const LmHead<B> head = lm_head();
    Buffer<std::int32_t> labels(std::min(head.chunk, rows));
    Buffer<double> row(std::min(head.chunk, rows));
    std::vector<std::int32_t> host_labels;
    std::vector<double> host_row;
    head.for_each_chunk(hidden.data(), rows, [&](std::size_t r0, std::size_t n, float* logits,
                                                 const float* lse) {
      LmHead<B>::next_token_labels(host_labels, p.ids, r0, n, T);
      Ops::upload(labels.data(), host_labels.data(), n);
      Ops::row_nll(row.data(), logits, lse, labels.data(), n, vocab());
      host_row.resize(n);
      Ops::download(host_row.data(), row.data(), n);
      for (std::size_t r = 0; r < n; ++r) {
        const std::size_t g = r0 + r, b = g / T, t = g % T;
        if (t + 1 < T) nll[b * (T - 1) + t] = host_row[r];
      }
    });
    return nll;
  }

  /// Full logits (B, T, V) on the host. Memory B*T*V floats: for tests and small models.
  [[nodiscard]] std::vector<float> logits(std::span<const TokenIds> windows,
                                          const WeightOverrides* overrides = nullptr) const {
    const auto hidden = hidden_states(windows, overrides);
    const std::size_t rows = hidden.size() / config_.hidden_size;
    Buffer<float> out(rows * vocab());
    head(hidden.data(), rows, out.data());
    return to_host(out);
  }

  // ------------------------------------------------------------------ training

  /// Every parameter in HF order (embed_tokens; per block input_layernorm, q/k/v weights and
  /// biases, o_proj, post_attention_layernorm, gate/up/down; norm; lm_head unless tied), with
  /// mutable host storage: an optimiser updates the model in place. Host backends only.
  [[nodiscard]] std::vector<Parameter> parameters()
    requires(B::memory == backend::Memory::kHost)
  {
    std::vector<Parameter> out;
    visit_parameters([&](std::string name, std::vector<std::size_t> shape, Buffer<float>& buf) {
      out.push_back(Parameter{std::move(name), std::move(shape), {buf.data(), buf.size()}});
    });
    return out;
  }

  /// Zeroed gradients, one host tensor per parameter.
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
  double accumulate_gradients(std::span<const TokenIds> windows, ParameterGradients& grads) const {
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
    const auto p = pack(windows, 2);
    CaptureOptions opt;
    opt.labels = LabelSource::kData;
    ParamGradSink sink(this, grads);
    const double window_loss_sum = run_backward(p, 0, opt, nullptr, sink, &sink);
    sink.finish();
    return window_loss_sum / static_cast<double>(p.windows);
  }

  // ------------------------------------------------------------------ capture (forward + backward)

  /// Streams every (selected) linear layer's capture, batch by batch, to the observers. Runs the
  /// backward pass only when an observer needs gradients; then each layer is delivered during
  /// the backward, last block first, with x and g together. Otherwise x (and x^T x) are
  /// delivered during the forward.
  template <CaptureObserver... Obs>
  CaptureSummary capture(std::span<const TokenIds> windows, const CaptureOptions& opt,
                         Obs&... observers) const {
    return capture_with(windows, opt, nullptr, observers...);
  }

  /// capture() of the model with some linear layers overridden.
  template <CaptureObserver... Obs>
  CaptureSummary capture_with(std::span<const TokenIds> windows, const CaptureOptions& opt,
                              const WeightOverrides* overrides, Obs&... observers) const {
    require<ArgumentError>(opt.batch_size > 0, "capture: batch_size must be positive");
    CaptureNeeds needs;
    ((needs = needs | CaptureNeeds(observers.needs())), ...);
    check_windows(windows, opt.labels == LabelSource::kData ? 2 : 1);
    std::vector<char> selected(registry_.size(), opt.layers.empty() ? 1 : 0);
    for (auto l : opt.layers) {
      require<ArgumentError>(l < registry_.size(), "capture: layer index {} out of range ({})", l,
                             registry_.size());
      selected[l] = 1;
    }
    CaptureSummary summary;
    double loss_sum = 0.0;
    for (std::size_t w0 = 0, batch = 0; w0 < windows.size(); w0 += opt.batch_size, ++batch) {
      const std::size_t nb = std::min(opt.batch_size, windows.size() - w0);
      const auto p = pack(windows.subspan(w0, nb), 1);
      const std::size_t T = p.seq_len;
      const CaptureBatch ctx{batch, w0, nb, T, opt.labels == LabelSource::kData ? T - 1 : T,
                             needs, &selected};
      CaptureDelivery<B, Obs...> deliver(ctx, std::tie(observers...));
      if (needs.backward()) {
        loss_sum += run_backward(p, w0, opt, overrides, deliver);
      } else {
        run_forward(p, overrides, nullptr,
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
  struct NoX {
    void operator()(const LinearInfo&, const float*) const noexcept {}
  };

  /// Windows packed into one id array (host), with their count and length.
  struct Packed {
    std::vector<std::int32_t> ids;
    std::size_t windows, seq_len;
  };

  [[nodiscard]] std::size_t vocab() const noexcept { return config_.vocab_size; }

  template <class T>
  static std::vector<T> to_host(const Buffer<T>& b) {
    std::vector<T> out(b.size());
    Ops::download(out.data(), b.data(), b.size());
    return out;
  }

  /// fn(name, shape, buffer) for every parameter, in HF's named_parameters() order.
  template <class Fn>
  void visit_parameters(Fn&& fn) {
    const auto& c = config_;
    const std::size_t C = c.hidden_size;
    fn("model.embed_tokens.weight", {c.vocab_size, C}, embed_);
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      BlockWeights<B>& blk = blocks_[i];
      for (LinearKind k : kAllLinearKinds) {
        const auto [out, in] = linear_shape(c, k);
        const std::string name = linear_name(i, k);
        fn(name + ".weight", {out, in}, blk.weight(k));
        if (auto* b = BlockWeights<B>::bias_of(blk, k); b && b->size() != 0)
          fn(name + ".bias", {out}, *b);
      }
      const std::string p = fmt::format("model.layers.{}.", i);
      fn(p + "input_layernorm.weight", {C}, blk.attn_norm);
      fn(p + "post_attention_layernorm.weight", {C}, blk.mlp_norm);
    }
    fn("model.norm.weight", {C}, final_norm_);
    if (!c.tie_word_embeddings) fn("lm_head.weight", {c.vocab_size, C}, lm_head_);
  }

  /// Receives the backward's linear captures and adds every parameter's gradient (the linears
  /// here; norms, embedding and head inside run_backward) into a ParameterGradients: in place on
  /// a host backend, through backend buffers added in by finish() otherwise.
  class ParamGradSink {
   public:
    ParamGradSink(const Transformer* m, ParameterGradients& g) : model_(m), host_(&g) {
      std::size_t n = 0;
      const_cast<Transformer*>(m)->visit_parameters(
          [&](const std::string&, const std::vector<std::size_t>&, Buffer<float>& buf) {
            float* target = g.tensors[n].data();
            if constexpr (B::memory != backend::Memory::kHost) {
              device_.emplace_back(buf.size());
              Ops::fill(device_.back().data(), buf.size(), 0.0f);
              target = device_.back().data();
            }
            target_.emplace(buf.data(), target);
            ++n;
          });
    }
    /// The gradient storage (backend memory) of parameter `p`.
    float* of(const Buffer<float>& p) const { return target_.at(p.data()); }

    void operator()(const LinearInfo& li, const float* x, const float* g) {
      const BlockWeights<B>& blk = model_->blocks_[li.block];
      Linear<B>::backward_weight(of(blk.weight(li.kind)), g, x, rows, li.in_features,
                                 li.out_features, true);
      if (li.has_bias)
        Ops::bias_backward(of(*BlockWeights<B>::bias_of(blk, li.kind)), g, rows,
                           li.out_features);
    }

    /// Adds the backend buffers into the host gradients (nothing to do on a host backend).
    void finish() const {
      std::vector<float> host;
      for (std::size_t i = 0; i < device_.size(); ++i) {
        host.resize(device_[i].size());
        Ops::download(host.data(), device_[i].data(), host.size());
        auto& dst = host_->tensors[i];
        for (std::size_t k = 0; k < host.size(); ++k) dst[k] += host[k];
      }
    }

    std::size_t rows = 0;  // tokens of the current batch, set by run_backward

   private:
    const Transformer* model_;
    ParameterGradients* host_;
    std::unordered_map<const float*, float*> target_;
    std::vector<Buffer<float>> device_;
  };

  [[nodiscard]] const float* head_weight() const noexcept {
    return config_.tie_word_embeddings ? embed_.data() : lm_head_.data();
  }

  /// The linear weights block `block` uses in this call: the override's where there is one
  /// (uploaded into `staging` for a backend whose memory is not the host's), else the model's.
  BlockLinears block_linears(std::size_t block, const WeightOverrides* ov,
                             std::vector<Buffer<float>>& staging) const {
    const BlockWeights<B>& bw = blocks_[block];
    BlockLinears l;
    for (LinearKind k : kAllLinearKinds) {
      const float* w = bw.weight(k).data();
      if (ov) {
        const LinearInfo& li = registry_.at(block, k);
        if (const float* p = ov->find(li.index)) {
          if constexpr (B::memory == backend::Memory::kHost) {
            w = p;
          } else {
            staging.emplace_back(li.parameters());
            Ops::upload(staging.back().data(), p, li.parameters());
            w = staging.back().data();
          }
        }
      }
      l.w[static_cast<std::size_t>(k)] = w;
    }
    l.bq = bw.bq.size() ? bw.bq.data() : nullptr;
    l.bk = bw.bk.size() ? bw.bk.data() : nullptr;
    l.bv = bw.bv.size() ? bw.bv.data() : nullptr;
    return l;
  }

  template <class Get>
  void load(Get&& get) {
    const auto& c = config_;
    const std::size_t C = c.hidden_size;
    auto buffer = [&](const std::string& name, std::vector<std::size_t> shape) {
      const std::span<const float> host = get(name, std::move(shape));
      Buffer<float> buf(host.size());
      Ops::upload(buf.data(), host.data(), host.size());
      return buf;
    };
    embed_ = buffer("model.embed_tokens.weight", {c.vocab_size, C});
    blocks_.resize(c.num_hidden_layers);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
      auto& blk = blocks_[i];
      const std::string p = fmt::format("model.layers.{}.", i);
      blk.attn_norm = buffer(p + "input_layernorm.weight", {C});
      blk.mlp_norm = buffer(p + "post_attention_layernorm.weight", {C});
      for (LinearKind k : kAllLinearKinds) {
        const auto [out, in] = linear_shape(c, k);
        const std::string name = linear_name(i, k);
        const std::span<const float> w = get(name + ".weight", {out, in});
        blk.weight(k) = Buffer<float>(w.size());
        Ops::upload(blk.weight(k).data(), w.data(), w.size());
        if constexpr (B::memory != backend::Memory::kHost)
          host_linears_.emplace_back(w.begin(), w.end());
        const bool bias = c.attention_bias &&
                          (k == LinearKind::kQ || k == LinearKind::kK || k == LinearKind::kV);
        if (bias) *BlockWeights<B>::bias_of(blk, k) = buffer(name + ".bias", {out});
        registry_.add(i, k, in, out, bias);
      }
    }
    final_norm_ = buffer("model.norm.weight", {C});
    if (!c.tie_word_embeddings) lm_head_ = buffer("lm_head.weight", {c.vocab_size, C});
    inv_freq_ = rope_inv_freq(c);
  }

  /// Validates the windows: non-empty, one length >= min_len, within max_position_embeddings
  /// (unless allowed), every id inside the vocabulary.
  void check_windows(std::span<const TokenIds> windows, std::size_t min_len) const {
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

  Packed pack(std::span<const TokenIds> windows, std::size_t min_len) const {
    check_windows(windows, min_len);
    Packed p{{}, windows.size(), windows[0].size()};
    p.ids.reserve(p.windows * p.seq_len);
    for (const auto& w : windows) p.ids.insert(p.ids.end(), w.begin(), w.end());
    return p;
  }

  /// The shape of block `i` for a batch: its attention window is the config's for that block
  /// (Qwen2's max_window_layers gives full attention below it and a sliding window from it on).
  [[nodiscard]] BlockShape block_shape(std::size_t i, std::size_t nb, std::size_t T) const {
    const auto& c = config_;
    BlockShape s;
    s.index = i;
    s.windows = nb;
    s.seq_len = T;
    s.hidden = c.hidden_size;
    s.intermediate = c.intermediate_size;
    s.q_dim = c.q_dim();
    s.kv_dim = c.kv_dim();
    s.eps = static_cast<float>(c.rms_norm_eps);
    s.attention = {nb, T, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                   c.attention_window(i)};
    s.rope_q = {nb * T, T, c.num_attention_heads, c.head_dim, c.rope_style};
    s.rope_k = {nb * T, T, c.num_key_value_heads, c.head_dim, c.rope_style};
    return s;
  }

  [[nodiscard]] RopeTables<B> rope_tables(std::size_t T) const {
    const auto host = rope_table(inv_freq_, T);
    RopeTables<B> t{Buffer<float>(host.cos.size()), Buffer<float>(host.sin.size())};
    Ops::upload(t.cos.data(), host.cos.data(), host.cos.size());
    Ops::upload(t.sin.data(), host.sin.data(), host.sin.size());
    return t;
  }

  /// The embeddings of the packed ids (N, C) in backend memory.
  [[nodiscard]] Buffer<float> embed(const Packed& p, Buffer<std::int32_t>& ids) const {
    const std::size_t N = p.windows * p.seq_len, C = config_.hidden_size;
    ids = Buffer<std::int32_t>(N);
    Ops::upload(ids.data(), p.ids.data(), N);
    Buffer<float> x(N * C);
    Ops::embedding_forward(x.data(), ids.data(), embed_.data(), N, C);
    return x;
  }

  /// What the backward needs from the forward: each block's activations, the last residual
  /// stream and its rstd under the final norm, the ids and the rotary tables.
  struct Saved {
    std::vector<BlockActivations<B>> blocks;
    Buffer<float> x_last, rstd_last;
    Buffer<std::int32_t> ids;
    RopeTables<B> rope;
  };

  /// Runs the blocks and the final norm; returns the final hidden states (N, C). With `saved`,
  /// keeps what the backward needs. `on_x(layer, x)` sees each linear layer's input.
  template <class OnX>
  Buffer<float> run_forward(const Packed& p, const WeightOverrides* ov, Saved* saved,
                            OnX&& on_x) const {
    require<ArgumentError>(!ov || ov->registry() == &registry_.all(),
                           "Transformer: weight overrides were made for another model");
    const std::size_t nb = p.windows, T = p.seq_len, N = nb * T, C = config_.hidden_size;
    const std::size_t L = config_.num_hidden_layers;
    auto rope = rope_tables(T);
    Buffer<std::int32_t> ids;
    Buffer<float> x = embed(p, ids);
    BlockActivations<B> scratch;
    if (saved) saved->blocks.assign(L, BlockActivations<B>{});
    std::vector<Buffer<float>> staging;
    for (std::size_t i = 0; i < L; ++i) {
      staging.clear();
      const BlockLinears lin = block_linears(i, ov, staging);
      Block<B>::forward(blocks_[i], lin, block_shape(i, nb, T), rope, x.data(),
                        saved ? saved->blocks[i] : scratch, saved != nullptr,
                        [&](LinearKind k, const float* in) { on_x(registry_.at(i, k), in); });
    }
    Buffer<float> out(N * C);
    if (saved) saved->rstd_last = Buffer<float>(N);
    Ops::rmsnorm_forward(out.data(), saved ? saved->rstd_last.data() : nullptr, x.data(),
                         final_norm_.data(), N, C, static_cast<float>(config_.rms_norm_eps));
    if (saved) {
      saved->x_last = std::move(x);
      saved->ids = std::move(ids);
      saved->rope = std::move(rope);
    }
    return out;
  }

  /// Forward with saving, loss, backward through every block; delivers captures. Returns the
  /// sum over the batch's windows of the window mean cross-entropy.
  template <class Deliver>
  double run_backward(const Packed& p, std::size_t first_window, const CaptureOptions& opt,
                      const WeightOverrides* ov, Deliver& deliver,
                      ParamGradSink* pg = nullptr) const {
    const auto& c = config_;
    const std::size_t nb = p.windows, T = p.seq_len, N = nb * T, C = c.hidden_size;
    const std::size_t L = c.num_hidden_layers;
    Saved saved;
    const Buffer<float> hidden = run_forward(p, ov, &saved, NoX{});

    // Loss and its gradient w.r.t. the final hidden states.
    const bool data = opt.labels == LabelSource::kData;
    const std::size_t scored = data ? T - 1 : T;
    // Captures see d(window mean)/dy; parameter gradients are of the batch mean (HF's loss).
    const float scale = 1.0f / static_cast<float>(pg ? scored * nb : scored);
    if (pg) pg->rows = N;
    Buffer<float> dhidden(N * C);
    const std::vector<double> window_nll = lm_head().loss_backward(
        hidden.data(), p.ids, nb, T, opt.labels, opt.seed, first_window, scale, dhidden.data(),
        pg ? pg->of(c.tie_word_embeddings ? embed_ : lm_head_) : nullptr);
    double loss = 0.0;
    for (double s : window_nll) loss += s / static_cast<double>(scored);

    Buffer<float> dx(N * C);
    Ops::rmsnorm_backward(dx.data(), pg ? pg->of(final_norm_) : nullptr, dhidden.data(),
                          saved.x_last.data(), final_norm_.data(), saved.rstd_last.data(), N, C,
                          false);
    typename Block<B>::Scratch scratch(block_shape(0, nb, T));
    std::vector<Buffer<float>> staging;
    for (std::size_t i = L; i-- > 0;) {
      staging.clear();
      const BlockLinears lin = block_linears(i, ov, staging);
      const typename Block<B>::NormGrads ng{pg ? pg->of(blocks_[i].attn_norm) : nullptr,
                                            pg ? pg->of(blocks_[i].mlp_norm) : nullptr};
      Block<B>::backward(blocks_[i], lin, block_shape(i, nb, T), saved.rope, dx.data(),
                         saved.blocks[i], scratch, ng,
                         [&](LinearKind k, const float* x, const float* g) {
                           deliver(registry_.at(i, k), x, g);
                         });
    }
    if (pg) Ops::embedding_backward(pg->of(embed_), dx.data(), saved.ids.data(), N, C);
    return loss;
  }

  ModelConfig config_;
  TransformerOptions options_;
  Buffer<float> embed_, final_norm_, lm_head_;
  std::vector<BlockWeights<B>> blocks_;
  LinearRegistry registry_;
  std::vector<std::vector<float>> host_linears_;  ///< host copies, for device-memory backends
  std::vector<float> inv_freq_;
};

}  // namespace fragile::model
