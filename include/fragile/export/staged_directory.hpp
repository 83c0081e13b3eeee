// An export folder written all or nothing: files go into a hidden staging folder beside the
// target, which replaces the target only when commit() is called. A failed or killed export
// leaves nothing under the target name: the staging folder `.name.partial-PID` is removed by
// the destructor when the process survives the failure, and by the next export to the same
// target when it was killed.
#pragma once

#include "fragile/core/error.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace fragile::exporting {

class StagedDirectory {
 public:
  /// Refuses an existing `target` unless `force` (it is then replaced at commit()). `option`
  /// names the target in errors ("--out").
  StagedDirectory(std::filesystem::path target, bool force, std::string option = "output folder")
      : target_(std::move(target)), option_(std::move(option)) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (target_.filename().empty()) target_ = target_.parent_path();
    if (fs::exists(fs::symlink_status(target_, ec))) {
      require<IoError>(force, "{} '{}' already exists (add --force to replace it)", option_,
                       target_.string());
      require<IoError>(fs::is_directory(target_, ec), "{} '{}' exists and is not a folder",
                       option_, target_.string());
    }
    const auto parent = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    require<IoError>(!ec, "{} '{}': cannot create its parent folder: {}", option_,
                     target_.string(), ec.message());
    const std::string prefix = fmt::format(".{}.partial-", target_.filename().string());
    for (const auto& e : fs::directory_iterator(parent, ec)) {  // left by a killed export
      const auto name = e.path().filename().string();
      if (name.starts_with(prefix) && !fs::exists(fs::path("/proc") / name.substr(prefix.size())))
        fs::remove_all(e.path(), ec);
    }
    staging_ = parent / fmt::format("{}{}", prefix, ::getpid());
    fs::remove_all(staging_, ec);
    fs::create_directory(staging_, ec);
    require<IoError>(!ec, "{} '{}': cannot create the staging folder '{}': {}", option_,
                     target_.string(), staging_.string(), ec.message());
  }
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;
  ~StagedDirectory() {
    if (committed_) return;
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);
  }

  /// Where the files go until commit().
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return staging_; }
  [[nodiscard]] const std::filesystem::path& target() const noexcept { return target_; }

  /// Moves the staged folder to the target (replacing an old one) in two renames.
  void commit() {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path old;
    if (fs::exists(target_, ec)) {
      old = staging_.parent_path() /
            fmt::format(".{}.old-{}", target_.filename().string(), ::getpid());
      fs::remove_all(old, ec);
      fs::rename(target_, old, ec);
      require<IoError>(!ec, "{} '{}': cannot move the old folder aside: {}", option_,
                       target_.string(), ec.message());
    }
    fs::rename(staging_, target_, ec);
    require<IoError>(!ec, "{} '{}': cannot move the finished export into place: {}", option_,
                     target_.string(), ec.message());
    committed_ = true;
    if (!old.empty()) fs::remove_all(old, ec);
  }

 private:
  std::filesystem::path target_, staging_;
  std::string option_;
  bool committed_ = false;
};

}  // namespace fragile::exporting
