// A resumable, append-only result store (JSON Lines) for long sweeps: each finished unit of
// work (a layer's V_l, a metric pass, an allocation) is appended and fsync'ed as one line, so an
// interrupted study loses at most the unit in flight and resumes where it stopped.
//
// Line 1 is a header {"fragile_result_store": 1, "fingerprint": "..."}: the fingerprint
// summarises everything the results depend on (model, data, quantizer, seed...). Opening a
// store with a different fingerprint is a ConfigError rather than a silent mix of results.
// A torn last line (the process died mid-write) is dropped and truncated away on open.
#pragma once

#include "fragile/core/error.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fragile::study {

class ResultStore {
 public:
  /// Opens (or creates) the store at `path` for results computed under `fingerprint`.
  ResultStore(std::filesystem::path path, std::string fingerprint)
      : path_(std::move(path)), fingerprint_(std::move(fingerprint)) {
    if (std::filesystem::exists(path_)) {
      load();
    } else {
      if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
      append_line(nlohmann::json{{"fragile_result_store", 1}, {"fingerprint", fingerprint_}}.dump());
    }
  }

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] const std::string& fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] std::size_t size() const noexcept { return records_.size(); }
  [[nodiscard]] bool contains(const std::string& key) const { return records_.contains(key); }

  /// The stored value for `key`, if any.
  [[nodiscard]] std::optional<nlohmann::json> get(const std::string& key) const {
    auto it = records_.find(key);
    if (it == records_.end()) return std::nullopt;
    return it->second;
  }

  /// Keys in the order they were first written.
  [[nodiscard]] const std::vector<std::string>& keys() const noexcept { return order_; }

  /// Appends (or overrides) a result durably: the line is on disk when put() returns.
  void put(const std::string& key, const nlohmann::json& value) {
    append_line(nlohmann::json{{"key", key}, {"value", value}}.dump());
    if (!records_.contains(key)) order_.push_back(key);
    records_[key] = value;
  }

 private:
  void load() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) raise<IoError>("result store '{}': cannot open for reading", path_.string());
    std::string line;
    std::size_t line_no = 0, good_bytes = 0;
    bool torn = false;
    while (std::getline(in, line)) {
      ++line_no;
      const bool complete = !in.eof();  // the line ended with '\n'
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!complete || j.is_discarded()) {
        // Only the very last line may be torn; anything earlier is corruption.
        if (in.peek() != std::char_traits<char>::eof() && complete)
          raise<IoError>("result store '{}': line {} is not valid JSON", path_.string(), line_no);
        torn = true;
        break;
      }
      if (line_no == 1) {
        require<IoError>(j.is_object() && j.contains("fragile_result_store") &&
                             j.contains("fingerprint") && j["fingerprint"].is_string(),
                         "result store '{}': first line is not a fragile result-store header",
                         path_.string());
        const std::string stored = j["fingerprint"];
        require<ConfigError>(stored == fingerprint_,
                             "result store '{}' holds results for fingerprint '{}', this study's "
                             "is '{}'; use another path or delete the file",
                             path_.string(), stored, fingerprint_);
      } else {
        require<IoError>(j.is_object() && j.contains("key") && j["key"].is_string() &&
                             j.contains("value"),
                         "result store '{}': line {} is not a {{\"key\", \"value\"}} record",
                         path_.string(), line_no);
        const std::string key = j["key"];
        if (!records_.contains(key)) order_.push_back(key);
        records_[key] = j["value"];
      }
      good_bytes += line.size() + 1;
    }
    require<IoError>(line_no > 0 && !(line_no == 1 && torn),
                     "result store '{}': empty or torn header", path_.string());
    if (torn) std::filesystem::resize_file(path_, good_bytes);
  }

  void append_line(const std::string& line) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
      raise<IoError>("result store '{}': cannot open for appending: {}", path_.string(),
                     std::strerror(errno));
    const std::string data = line + "\n";
    std::size_t written = 0;
    while (written < data.size()) {
      const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int e = errno;
        ::close(fd);
        raise<IoError>("result store '{}': write failed: {}", path_.string(), std::strerror(e));
      }
      written += static_cast<std::size_t>(n);
    }
    ::fsync(fd);
    ::close(fd);
  }

  std::filesystem::path path_;
  std::string fingerprint_;
  std::map<std::string, nlohmann::json> records_;
  std::vector<std::string> order_;
};

}  // namespace fragile::study
