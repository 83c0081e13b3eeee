// results.json: one study's complete record (schema "fragile-results/1"): the command, every
// option as given, fragile's version and git description, the model and data with their content
// fingerprints, warnings, the study's sections ("map", "shootout", "ratios") and, under "run",
// what varies between runs of the same inputs (timings, evaluations computed or resumed). The
// rest is a pure function of the inputs: the same inputs and seed give the same bytes.
#pragma once

#include "fragile/io/atomic_file.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::study {

inline constexpr std::string_view kResultsSchema = "fragile-results/1";

/// fragile's version and the git description of the build (set by the build system).
inline nlohmann::json build_info() {
#if defined(FRAGILE_GIT_DESCRIBE)
  const char* git = FRAGILE_GIT_DESCRIBE;
#else
  const char* git = "unknown";
#endif
#if defined(FRAGILE_VERSION_STRING)
  const char* version = FRAGILE_VERSION_STRING;
#else
  const char* version = "0.1.0";
#endif
  return {{"version", version}, {"git", git}};
}

struct ResultsDocument {
  std::string command;
  nlohmann::json config = nlohmann::json::object();   ///< every option, echoed
  nlohmann::json sections = nlohmann::json::object(); ///< "map", "shootout", "ratios"
  std::vector<std::string> warnings;
  nlohmann::json run = nlohmann::json::object();      ///< timings and resume counts

  /// `described`: the study context's "model" and "data" sections (Context::describe()).
  [[nodiscard]] nlohmann::json to_json(const nlohmann::json& described) const {
    nlohmann::json j = {{"schema", std::string(kResultsSchema)},
                        {"command", command},
                        {"fragile", build_info()},
                        {"config", config}};
    j["model"] = described.at("model");
    j["data"] = described.at("data");
    j["warnings"] = warnings;
    for (const auto& [k, v] : sections.items()) j[k] = v;
    j["run"] = run;
    return j;
  }
};

/// Writes `doc` as out_dir/results.json, atomically.
inline std::filesystem::path write_results(const std::filesystem::path& out_dir,
                                           const nlohmann::json& doc) {
  const auto path = out_dir / "results.json";
  io::write_atomically(path, std::string_view(doc.dump(2) + "\n"));
  return path;
}

}  // namespace fragile::study
