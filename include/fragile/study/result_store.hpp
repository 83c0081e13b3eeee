// A resumable, append-only result store (JSON Lines) for long sweeps: each finished unit of
// work (a layer's V_l, a metric pass, an allocation) is appended and fsync'ed as one line, so an
// interrupted study loses at most the unit in flight and resumes where it stopped.
//
// Line 1 is a header {"fragile_result_store": 2, "fingerprint": "..."}: the fingerprint
// summarises everything the results depend on (model, data, quantizer, seed...). Opening a
// store with a different fingerprint is a ConfigError rather than a silent mix of results.
//
// Every record carries "xxh3", the XXH3-64 of its key and value (as dumped), so a line that was
// edited or damaged on disk is an IoError naming it, never a number read back as if computed.
// Only a line without its final newline can be torn (each line is one write): that last line
// is dropped and truncated away on open; any other bad line is corruption.
#pragma once

#include "fragile/core/content_hash.hpp"
#include "fragile/core/error.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
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
  static constexpr int kVersion = 2;

  /// Opens (or creates) the store at `path` for results computed under `fingerprint`.
  ResultStore(std::filesystem::path path, std::string fingerprint)
      : path_(std::move(path)), fingerprint_(std::move(fingerprint)) {
    if (std::filesystem::exists(path_)) {
      load();
    } else {
      if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
      append_line(nlohmann::json{{"fragile_result_store", kVersion}, {"fingerprint", fingerprint_}}.dump());
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
    append_line(nlohmann::json{{"key", key}, {"value", value}, {"xxh3", checksum(key, value)}}.dump());
    if (!records_.contains(key)) order_.push_back(key);
    records_[key] = value;
  }

 private:
  static std::string checksum(const std::string& key, const nlohmann::json& value) {
    const std::string v = value.dump();
    ContentHash h;
    h.bytes(key.data(), key.size()).bytes("", 1).bytes(v.data(), v.size());
    return fmt::format("{:016x}", h.digest());
  }

  void load() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) raise<IoError>("result store '{}': cannot open for reading", path_.string());
    std::string line;
    std::size_t line_no = 0, good_bytes = 0;
    bool torn = false;
    while (std::getline(in, line)) {
      ++line_no;
      const bool complete = !in.eof();  // the line ended with '\n'
      if (!complete) {  // the process died mid-write: only the last line can lack its newline
        torn = true;
        break;
      }
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      require<IoError>(!j.is_discarded(),
                       "result store '{}': line {} is not valid JSON (the file was edited or "
                       "damaged; delete it to start over)", path_.string(), line_no);
      if (line_no == 1) {
        require<IoError>(j.is_object() && j.contains("fragile_result_store") &&
                             j.contains("fingerprint") && j["fingerprint"].is_string(),
                         "result store '{}': first line is not a fragile result-store header",
                         path_.string());
        require<IoError>(j["fragile_result_store"] == kVersion,
                         "result store '{}': format version {} (records without checksums), "
                         "this fragile reads version {}; delete the file to start over",
                         path_.string(), j["fragile_result_store"].dump(), kVersion);
        const std::string stored = j["fingerprint"];
        require<ConfigError>(stored == fingerprint_,
                             "result store '{}' holds results for fingerprint '{}', this study's "
                             "is '{}'; use another path or delete the file",
                             path_.string(), stored, fingerprint_);
      } else {
        require<IoError>(j.is_object() && j.contains("key") && j["key"].is_string() &&
                             j.contains("value") && j.contains("xxh3") && j["xxh3"].is_string(),
                         "result store '{}': line {} is not a {{\"key\", \"value\", \"xxh3\"}} "
                         "record", path_.string(), line_no);
        const std::string key = j["key"];
        require<IoError>(j["xxh3"].get<std::string>() == checksum(key, j["value"]),
                         "result store '{}': line {} ('{}') fails its checksum: the record was "
                         "edited or damaged; delete the file to start over",
                         path_.string(), line_no, key);
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
    const bool synced = ::fsync(fd) == 0;
    const int sync_errno = errno;
    const bool closed = ::close(fd) == 0;
    if (!synced || !closed)
      raise<IoError>("result store '{}': write failed: {}", path_.string(),
                     std::strerror(synced ? errno : sync_errno));
  }

  std::filesystem::path path_;
  std::string fingerprint_;
  std::map<std::string, nlohmann::json> records_;
  std::vector<std::string> order_;
};

}  // namespace fragile::study
