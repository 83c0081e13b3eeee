// Pre-training of a model on a token stream: batches of windows sampled with a seed, the mean
// next-token cross-entropy and its gradient from the runtime's backward, clipping by global norm,
// AdamW on the warm-up + cosine schedule, periodic evaluation perplexity, and resumable
// checkpoints.
//
// Determinism: the windows of step s are drawn from Rng(seed).fork(s) alone, and the optimiser
// state is checkpointed exactly (parameters, both moments, the step), so a run killed after a
// checkpoint and resumed takes the same steps as an uninterrupted run, and at a fixed thread
// count ends with the same weights.
//
// Run folder: checkpoint.safetensors (the training state, written atomically), train_log.jsonl
// (one line per step: loss, learning rate, gradient norm, tokens/s; one per evaluation) and
// loss.svg (the curves). A resumed run keeps the log lines of the steps before its checkpoint.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/eval/perplexity.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/model/transformer.hpp"
#include "fragile/study/progress.hpp"
#include "fragile/train/adamw.hpp"
#include "fragile/train/loss_plot.hpp"
#include "fragile/train/schedule.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace fragile::train {

struct TrainOptions {
  std::size_t steps = 1000;
  std::size_t batch_size = 16;   ///< windows per step
  std::size_t seq_len = 128;     ///< tokens per window (seq_len - 1 predictions)
  double lr = 3e-3;              ///< peak learning rate
  double min_lr = 3e-4;          ///< the cosine schedule's floor
  std::size_t warmup = 50;       ///< linear warm-up steps
  AdamWOptions adamw;
  double clip = 1.0;             ///< max global gradient norm (0: no clipping)
  std::uint64_t seed = 0;
  std::size_t eval_every = 200;  ///< steps between evaluations (the last step always evaluates)
  std::size_t checkpoint_every = 100;
  std::size_t eval_batch = 8;

  void validate() const {
    require<ArgumentError>(steps > 0, "train: --steps must be positive");
    require<ArgumentError>(batch_size > 0 && batch_size <= 4096,
                           "train: --batch must be in [1, 4096], got {}", batch_size);
    require<ArgumentError>(seq_len >= 2 && seq_len <= 65536,
                           "train: --seqlen must be in [2, 65536], got {}", seq_len);
    require<ArgumentError>(clip >= 0.0, "train: --clip must be >= 0, got {}", clip);
    require<ArgumentError>(eval_every > 0 && checkpoint_every > 0 && eval_batch > 0,
                           "train: evaluation and checkpoint intervals must be positive");
    schedule().validate();
    adamw.validate();
  }
  [[nodiscard]] CosineSchedule schedule() const { return {lr, min_lr, warmup, steps}; }

  /// Every option that changes a number (a resumed run must match them all).
  [[nodiscard]] nlohmann::json to_json() const {
    return {{"steps", steps},       {"batch_size", batch_size},
            {"seq_len", seq_len},   {"lr", lr},
            {"min_lr", min_lr},     {"warmup", warmup},
            {"beta1", adamw.beta1}, {"beta2", adamw.beta2},
            {"eps", adamw.eps},     {"weight_decay", adamw.weight_decay},
            {"clip", clip},         {"seed", seed},
            {"eval_every", eval_every}, {"eval_batch", eval_batch}};
  }
};

/// The windows of optimiser step `step`: `batch` windows of `seq_len` tokens at offsets drawn
/// uniformly from Rng(seed).fork(step).
inline std::vector<model::TokenIds> sample_batch(std::span<const data::TokenId> tokens,
                                               std::size_t seq_len, std::size_t batch,
                                               std::uint64_t seed, std::size_t step) {
  require<ArgumentError>(tokens.size() >= seq_len,
                         "train: the training text has {} tokens, fewer than one window of {}",
                         tokens.size(), seq_len);
  Rng rng = Rng(seed).fork(step);
  std::vector<model::TokenIds> out(batch);
  for (auto& w : out) {
    const std::size_t off = rng.below(tokens.size() - seq_len + 1);
    w.assign(tokens.begin() + static_cast<std::ptrdiff_t>(off),
             tokens.begin() + static_cast<std::ptrdiff_t>(off + seq_len));
  }
  return out;
}

/// What a run reports as it goes (for progress lines and tests).
struct StepRecord {
  std::size_t step = 0;
  double loss = 0.0, lr = 0.0, grad_norm = 0.0, tokens_per_s = 0.0;
};

struct TrainSummary {
  std::size_t first_step = 0;  ///< 0, or the step a resumed run started from
  std::size_t steps = 0;       ///< steps done when run() returned (options.steps unless stopped)
  double final_loss = 0.0;
  double eval_ppl = std::nan("");
  double seconds = 0.0;
};

template <backend::Backend B>
class Trainer {
 public:
  /// `fingerprint` names the model configuration and data (a resumed run must match it).
  Trainer(model::Transformer<B>& model, TrainOptions options,
          std::span<const data::TokenId> train_tokens, std::vector<data::Window> eval_windows,
          std::filesystem::path run_dir, nlohmann::json fingerprint = {})
      : model_(model), options_(options), train_(train_tokens), eval_(std::move(eval_windows)),
        dir_(std::move(run_dir)), fingerprint_(std::move(fingerprint)),
        params_(model.parameters()), opt_(params_, options.adamw) {
    options_.validate();
    require<ArgumentError>(train_.size() >= options_.seq_len,
                           "train: the training text has {} tokens, fewer than one window of {}",
                           train_.size(), options_.seq_len);
  }

  /// Progress lines (default: stderr, every 2 s); an empty sink is silent.
  void set_progress_sink(study::Progress::Sink sink) { sink_ = std::move(sink); }
  /// Called after every step (tests stop a run here to simulate a kill).
  void on_step(std::function<void(const StepRecord&)> fn) { on_step_ = std::move(fn); }
  /// Ends run() after step `step` (exclusive) with a checkpoint there, to be resumed later;
  /// 0 runs to options.steps.
  void stop_at(std::size_t step) { stop_at_ = step; }

  /// Trains to options.steps, continuing from the run folder's checkpoint when `resume`.
  TrainSummary run(bool resume) {
    namespace fs = std::filesystem;
    fs::create_directories(dir_);
    TrainSummary sum;
    std::size_t step = 0;
    if (resume && fs::exists(checkpoint_path())) step = load_checkpoint();
    sum.first_step = step;
    restore_log(step);
    const auto schedule = options_.schedule();
    auto grads = model_.make_gradients();
    const auto t0 = std::chrono::steady_clock::now();
    study::Progress progress("train", options_.steps, step, sink_);
    const double tokens_per_step =
        static_cast<double>(options_.batch_size * (options_.seq_len - 1));
    const std::size_t end = stop_at_ ? std::min(stop_at_, options_.steps) : options_.steps;
    for (; step < end; ++step) {
      const auto ts = std::chrono::steady_clock::now();
      const auto batch =
          sample_batch(train_, options_.seq_len, options_.batch_size, options_.seed, step);
      grads.zero();
      const double loss = model_.accumulate_gradients(batch, grads);
      require<NumericError>(std::isfinite(loss),
                            "train: the loss is {} at step {} (the run diverged; lower --lr)",
                            loss, step);
      const double norm = clip_gradients(grads, options_.clip);
      const double lr = schedule(step);
      opt_.step(params_, grads, lr);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
      StepRecord rec{step, loss, lr, norm, dt > 0 ? tokens_per_step / dt : 0.0};
      append_log({{"step", step},
                  {"loss", loss},
                  {"lr", lr},
                  {"grad_norm", norm},
                  {"tokens_per_s", std::round(rec.tokens_per_s)}});
      curve_.train.push_back({static_cast<double>(step), loss});
      sum.final_loss = loss;
      const bool last = step + 1 == options_.steps;
      if (!eval_.empty() && ((step + 1) % options_.eval_every == 0 || last)) {
        sum.eval_ppl = evaluate();
        append_log({{"step", step}, {"eval_loss", std::log(sum.eval_ppl)}, {"eval_ppl", sum.eval_ppl}});
        curve_.eval.push_back({static_cast<double>(step), std::log(sum.eval_ppl)});
      }
      if ((step + 1) % options_.checkpoint_every == 0 || last || step + 1 == end) {
        save_checkpoint(step + 1);
        write_loss_plot(dir_ / "loss.svg", curve_);
      }
      progress.tick(fmt::format("loss {:.4f} lr {:.2e} {:.0f} tok/s", loss, lr, rec.tokens_per_s));
      if (on_step_) on_step_(rec);
    }
    sum.steps = std::max(step, sum.first_step);
    sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return sum;
  }

  /// Perplexity of the current model on the evaluation windows (GPTQ protocol).
  double evaluate() const {
    eval::PerplexityOptions po;
    po.batch_size = options_.eval_batch;
    return eval::perplexity(model_, eval_, po).perplexity;
  }

  [[nodiscard]] std::filesystem::path checkpoint_path() const { return dir_ / "checkpoint.safetensors"; }
  [[nodiscard]] std::filesystem::path log_path() const { return dir_ / "train_log.jsonl"; }

 private:
  nlohmann::json state_json(std::size_t step) const {
    return {{"format", "fragile-train-checkpoint-1"},
            {"step", step},
            {"options", options_.to_json()},
            {"fingerprint", fingerprint_}};
  }

  void save_checkpoint(std::size_t step) {
    io::SafetensorsWriter w;
    auto& m = opt_.first_moments();
    auto& v = opt_.second_moments();
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      w.add(p.name, DType::kF32, p.shape, p.value);
      w.add("adamw.m." + p.name, DType::kF32, p.shape, m[i]);
      w.add("adamw.v." + p.name, DType::kF32, p.shape, v[i]);
    }
    w.set_metadata("fragile.train", state_json(step).dump());
    w.write(checkpoint_path());
  }

  /// Restores parameters and optimiser state; returns the step to continue from.
  std::size_t load_checkpoint() {
    const auto path = checkpoint_path();
    const auto store = io::open_safetensors(path);
    const auto it = store.metadata().find("fragile.train");
    require<IoError>(it != store.metadata().end(),
                     "{}: not a fragile training checkpoint (no 'fragile.train' metadata)",
                     path.string());
    nlohmann::json state;
    try {
      state = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      raise<IoError>("{}: the training state is not valid JSON ({})", path.string(), e.what());
    }
    const auto now = state_json(0);
    for (const char* key : {"options", "fingerprint"}) {
      const auto& saved = state.value(key, nlohmann::json{});
      if (saved == now.at(key)) continue;
      std::string diff;
      for (const auto& [k, v] : now.at(key).items())
        if (!saved.contains(k) || saved.at(k) != v)
          diff += fmt::format(" {}: checkpoint {} vs now {};", k,
                              saved.contains(k) ? saved.at(k).dump() : "absent", v.dump());
      raise<ArgumentError>("{}: cannot resume, the run's {} changed:{} (start afresh without "
                           "--resume, or restore the original settings)",
                           path.string(), key, diff);
    }
    const std::size_t step = state.at("step").get<std::size_t>();
    require<IoError>(step <= options_.steps, "{}: checkpoint at step {} is past the run's {} steps",
                     path.string(), step, options_.steps);
    auto& m = opt_.first_moments();
    auto& v = opt_.second_moments();
    for (std::size_t i = 0; i < params_.size(); ++i) {
      store.read_f32(params_[i].name, params_[i].value);
      store.read_f32("adamw.m." + params_[i].name, m[i]);
      store.read_f32("adamw.v." + params_[i].name, v[i]);
    }
    opt_.set_steps_taken(step);
    return step;
  }

  /// Keeps the log lines of steps before `step` (the rest were not checkpointed) and rebuilds the
  /// curves from them.
  void restore_log(std::size_t step) {
    std::vector<std::string> kept;
    if (step > 0 && std::filesystem::exists(log_path())) {
      std::ifstream in(log_path());
      std::string line;
      while (std::getline(in, line)) {
        nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("step")) continue;  // a torn last line
        const auto s = j.at("step").get<std::size_t>();
        if (s >= step) continue;
        if (j.contains("loss")) curve_.train.push_back({static_cast<double>(s), j.at("loss")});
        if (j.contains("eval_loss")) curve_.eval.push_back({static_cast<double>(s), j.at("eval_loss")});
        kept.push_back(line);
      }
    }
    std::string text;
    for (const auto& l : kept) text += l + "\n";
    io::write_atomically(log_path(), std::string_view(text));
    log_.open(log_path(), std::ios::app);
    require<IoError>(static_cast<bool>(log_), "cannot append to '{}'", log_path().string());
  }

  void append_log(const nlohmann::json& j) {
    log_ << j.dump() << '\n';
    log_.flush();
    require<IoError>(static_cast<bool>(log_), "cannot write to '{}'", log_path().string());
  }

  model::Transformer<B>& model_;
  TrainOptions options_;
  std::span<const data::TokenId> train_;
  std::vector<data::Window> eval_;
  std::filesystem::path dir_;
  nlohmann::json fingerprint_;
  std::vector<model::Parameter> params_;
  AdamW opt_;
  study::Progress::Sink sink_ = study::Progress::default_sink();
  std::function<void(const StepRecord&)> on_step_;
  std::size_t stop_at_ = 0;
  std::ofstream log_;
  LossCurve curve_;
};

}  // namespace fragile::train
