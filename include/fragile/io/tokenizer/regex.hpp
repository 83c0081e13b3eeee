// RAII wrapper of a PCRE2 (8-bit, UTF + UCP) regular expression, used by the tokenizers'
// pre-tokenizers: \p{L}, \p{N} and \s must follow Unicode, which only a real regex engine gives.
// JIT-compiled when PCRE2 supports it; compile and match failures throw fragile::Error.
//   Philip Hazel, PCRE2 - Perl-compatible regular expressions, https://www.pcre.org/
#pragma once

#include "fragile/core/error.hpp"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8  // fragile::pcre2 defines it; set here so the header stands alone
#endif
#include <pcre2.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace fragile::io {

class Regex {
 public:
  /// Compiles `pattern` with PCRE2_UTF | PCRE2_UCP. Throws ConfigError naming the pattern, the
  /// error and its offset when the pattern is invalid.
  explicit Regex(std::string pattern) : pattern_(std::move(pattern)) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(),
                      PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
    if (!code) {
      raise<ConfigError>("regex: cannot compile '{}': {} at offset {}", pattern_, message(err),
                         err_offset);
    }
    code_.reset(code);
    // JIT matching uses PCRE2's default 32 KiB stack (no shared JIT stack, so split() is safe
    // to call from several threads); exhausting it is a match error, reported below.
    jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  }

  Regex(Regex&&) noexcept = default;
  Regex& operator=(Regex&&) noexcept = default;

  [[nodiscard]] const std::string& pattern() const noexcept { return pattern_; }
  [[nodiscard]] bool jit() const noexcept { return jit_; }

  /// Calls `f(std::string_view piece, bool matched)` for every maximal run of `text` in order:
  /// matches of the pattern (matched = true) and the text between them (matched = false), so
  /// that the pieces concatenate to `text`. `text` must be valid UTF-8 (not re-checked here).
  template <class F>
  void split(std::string_view text, F&& f) const {
    std::unique_ptr<pcre2_match_data, MatchDataFree> md(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr));
    if (!md) raise<Error>("regex: out of memory matching '{}'", pattern_);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const std::size_t n = text.size();
    std::size_t pos = 0, emitted = 0;
    while (pos <= n) {
      const int rc =
          jit_ ? pcre2_jit_match(code_.get(), subject, n, pos, 0, md.get(), nullptr)
               : pcre2_match(code_.get(), subject, n, pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        raise<Error>("regex: matching '{}' failed at byte {} of {}: {}", pattern_, pos, n,
                     message(rc));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const std::size_t b = ov[0], e = ov[1];
      if (b > emitted) {
        f(text.substr(emitted, b - emitted), false);
        emitted = b;
      }
      if (e > b) {
        f(text.substr(b, e - b), true);
        emitted = e;
        pos = e;
      } else {
        // Empty match: step over one whole code point so the loop always advances.
        if (b >= n) break;
        pos = b + 1;
        while (pos < n && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      }
    }
    if (emitted < n) f(text.substr(emitted), false);
  }

 private:
  static std::string message(int code) {
    PCRE2_UCHAR buf[256];
    if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return fmt::format("error {}", code);
    return std::string(reinterpret_cast<const char*>(buf));
  }
  struct CodeFree {
    void operator()(pcre2_code* p) const noexcept { pcre2_code_free(p); }
  };
  struct MatchDataFree {
    void operator()(pcre2_match_data* p) const noexcept { pcre2_match_data_free(p); }
  };

  std::string pattern_;
  std::unique_ptr<pcre2_code, CodeFree> code_;
  bool jit_ = false;
};

}  // namespace fragile::io
