// How the report prints numbers. Fixed formats, never the locale: the same results give the
// same bytes. Missing values (absent, null, non-finite) print as "n/a".
//   exact_text: shortest text that reads back to the same double (CSV files, plot data)
//   readable_text: 4 significant digits (summary.md, index.html, plot titles)
//   p_text: 2 significant digits
//   count_text: an integer
#pragma once

#include "fragile/study/report_data.hpp"

#include <fmt/format.h>

#include <cmath>
#include <string>

namespace fragile::study {

inline constexpr const char* kNotAvailable = "n/a";

inline bool is_finite(const Number& v) { return v && std::isfinite(*v); }

inline std::string exact_text(const Number& v) {
  return is_finite(v) ? fmt::format("{}", *v) : kNotAvailable;
}

inline std::string readable_text(const Number& v) {
  return is_finite(v) ? fmt::format("{:.4g}", *v) : kNotAvailable;
}

inline std::string p_text(const Number& v) {
  return is_finite(v) ? fmt::format("{:.2g}", *v) : kNotAvailable;
}

inline std::string count_text(const Number& v) {
  return is_finite(v) ? fmt::format("{:.0f}", *v) : kNotAvailable;
}

}  // namespace fragile::study
