// The training curves as a self-contained SVG: the training loss per step (raw, light, and its
// moving average over 1% of the run) and the evaluation loss at each evaluation, against the
// step. Plain SVG 1.1 with fixed number formatting, so the same curves give the same bytes.
#pragma once

#include "fragile/io/atomic_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace fragile::train {

struct LossCurve {
  std::vector<std::pair<double, double>> train;  ///< (step, training loss)
  std::vector<std::pair<double, double>> eval;   ///< (step, evaluation loss)
};

/// The SVG text of `curve` (an empty frame when it holds no points).
inline std::string loss_plot_svg(const LossCurve& curve) {
  constexpr double W = 720, H = 420, L = 70, R = 20, T = 30, Bm = 50;
  double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
  for (const auto* pts : {&curve.train, &curve.eval})
    for (const auto& [x, y] : *pts) {
      if (!std::isfinite(y)) continue;
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  if (!(y0 <= y1)) y0 = 0, y1 = 1;
  if (y1 - y0 < 1e-9) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (y1 - y) / (y1 - y0) * (H - T - Bm); };
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n",
      W, H);
  s += fmt::format("<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">training "
                   "loss (nats per token)</text>\n", W / 2);
  for (int i = 0; i <= 5; ++i) {
    const double y = y0 + (y1 - y0) * i / 5.0, x = x0 + (x1 - x0) * i / 5.0;
    s += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" "
                     "stroke=\"#ddd\"/>\n<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.2f}"
                     "</text>\n", L, py(y), W - R, py(y), L - 6, py(y) + 4, y);
    s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.0f}</text>\n",
                     px(x), H - Bm + 18, x);
  }
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">step</text>\n",
                   (L + W - R) / 2, H - 12);
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
                   "stroke=\"black\"/>\n", L, T, W - L - R, H - T - Bm);
  auto polyline = [&](const std::vector<std::pair<double, double>>& pts, const char* style) {
    if (pts.empty()) return;
    s += "<polyline fill=\"none\" " + std::string(style) + " points=\"";
    for (const auto& [x, y] : pts)
      if (std::isfinite(y)) s += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    s += "\"/>\n";
  };
  polyline(curve.train, "stroke=\"#9ecae1\" stroke-width=\"1\"");
  // Moving average over ~1% of the steps (at least 1).
  const std::size_t k = std::max<std::size_t>(1, curve.train.size() / 100);
  std::vector<std::pair<double, double>> avg;
  double acc = 0.0;
  for (std::size_t i = 0; i < curve.train.size(); ++i) {
    acc += curve.train[i].second;
    if (i >= k) acc -= curve.train[i - k].second;
    if (i + 1 >= k) avg.push_back({curve.train[i].first, acc / static_cast<double>(k)});
  }
  polyline(avg, "stroke=\"#08519c\" stroke-width=\"2\"");
  polyline(curve.eval, "stroke=\"#d94801\" stroke-width=\"2\"");
  for (const auto& [x, y] : curve.eval)
    if (std::isfinite(y))
      s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"#d94801\"/>\n", px(x), py(y));
  s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" fill=\"#08519c\">train (moving average of {})"
                   "</text>\n<text x=\"{:.1f}\" y=\"{:.1f}\" fill=\"#d94801\">evaluation</text>\n",
                   W - R - 230, T + 18, k, W - R - 230, T + 34);
  s += "</svg>\n";
  return s;
}

inline void write_loss_plot(const std::filesystem::path& path, const LossCurve& curve) {
  io::write_atomically(path, std::string_view(loss_plot_svg(curve)));
}

}  // namespace fragile::train
