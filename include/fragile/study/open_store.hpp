// A study's result store under a structured fingerprint: a JSON object of everything its
// numbers depend on (content hashes of model and windows, every option that changes a number).
// Resuming under another fingerprint is refused with the keys that changed, e.g.
// "... was made with other inputs: bits 3 -> 2, data fingerprint 0c1f.. -> 9ab2..".
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/study/result_store.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace fragile::study {

namespace detail {
inline std::string short_value(const nlohmann::json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}
}  // namespace detail

/// Opens `path` for results computed under `fingerprint` (an object; its dump() is the store's
/// fingerprint string). A store made under another fingerprint is a ConfigError naming each key
/// whose value differs.
inline ResultStore open_store(const std::filesystem::path& path, const nlohmann::json& fingerprint) {
  require<ArgumentError>(fingerprint.is_object(), "open_store: the fingerprint must be an object");
  const std::string mine = fingerprint.dump();
  std::ifstream in(path, std::ios::binary);
  std::string header;
  if (in && std::getline(in, header)) {
    const auto h = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
    if (h.is_object() && h.contains("fingerprint") && h["fingerprint"].is_string() &&
        h["fingerprint"].get<std::string>() != mine) {
      const auto theirs =
          nlohmann::json::parse(h["fingerprint"].get<std::string>(), nullptr, false);
      std::string changed;
      if (theirs.is_object()) {
        for (const auto& [k, v] : fingerprint.items()) {
          const bool differs = !theirs.contains(k) || theirs[k] != v;
          if (differs)
            changed += fmt::format("{}{} {} -> {}", changed.empty() ? "" : ", ", k,
                                   theirs.contains(k) ? detail::short_value(theirs[k]) : "(none)",
                                   detail::short_value(v));
        }
        for (const auto& [k, v] : theirs.items())
          if (!fingerprint.contains(k))
            changed += fmt::format("{}{} {} -> (none)", changed.empty() ? "" : ", ", k,
                                   detail::short_value(v));
      }
      raise<ConfigError>("--resume: '{}' holds results made with other inputs ({}); rerun without "
                         "--resume into another --out folder",
                         path.string(), changed.empty() ? std::string("unreadable fingerprint")
                                                        : changed);
    }
  }
  return ResultStore(path, mine);
}

}  // namespace fragile::study
