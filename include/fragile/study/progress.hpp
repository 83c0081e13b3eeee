// Progress with ETA for long work (sweeps over 100+ layers, calibration passes). Prints at most
// once per `interval` to a sink (stderr by default), so it costs nothing in tight loops.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>

namespace fragile::study {

/// "1h02m", "3m05s", "12.4s".
inline std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const auto s = static_cast<long long>(seconds + 0.5);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

class Progress {
 public:
  using Clock = std::chrono::steady_clock;
  using Sink = std::function<void(const std::string&)>;

  /// `total` units of work; `already_done` counts units restored from a result store (they do
  /// not enter the rate, so the ETA is not fooled by instant resumes).
  Progress(std::string label, std::size_t total, std::size_t already_done = 0,
           Sink sink = default_sink(), std::chrono::milliseconds interval = std::chrono::seconds(2))
      : label_(std::move(label)), total_(total), done_(already_done), resumed_(already_done),
        sink_(std::move(sink)), interval_(interval), start_(Clock::now()), last_(start_) {}

  /// Marks one more unit done (with an optional note, e.g. the layer name) and maybe reports.
  void tick(const std::string& note = {}) {
    ++done_;
    const auto now = Clock::now();
    if (done_ >= total_ || now - last_ >= interval_) {
      last_ = now;
      if (sink_) sink_(line(note));
    }
  }

  [[nodiscard]] std::size_t done() const noexcept { return done_; }
  [[nodiscard]] std::size_t total() const noexcept { return total_; }

  /// Seconds left at the current rate (NaN before the first timed unit).
  [[nodiscard]] double eta_seconds() const {
    const double elapsed = seconds_since_start();
    const std::size_t timed = done_ - resumed_;
    if (timed == 0 || elapsed <= 0) return std::numeric_limits<double>::quiet_NaN();
    return elapsed / static_cast<double>(timed) * static_cast<double>(total_ - done_);
  }

  [[nodiscard]] std::string line(const std::string& note = {}) const {
    const double pct = total_ ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0;
    std::string s = fmt::format("{}: {}/{} ({:.0f}%) elapsed {} ETA {}", label_, done_, total_,
                                pct, format_duration(seconds_since_start()),
                                done_ >= total_ ? "0s" : format_duration(eta_seconds()));
    if (!note.empty()) s += " [" + note + "]";
    return s;
  }

  static Sink default_sink() {
    return [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  }

 private:
  [[nodiscard]] double seconds_since_start() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }

  std::string label_;
  std::size_t total_, done_, resumed_;
  Sink sink_;
  std::chrono::milliseconds interval_;
  Clock::time_point start_, last_;
};

}  // namespace fragile::study
