// Plots one gnuplot script to an SVG file with the gnuplot executable, as a subprocess.
//
// The script goes to a temporary file next to the SVG and gnuplot reads it from there, with
// stdin from /dev/null (it can never sit waiting for input) and a time limit after which it is
// killed. gnuplot writes the SVG under a temporary name; the bytes are then written to the final
// path with write_atomically, so a reader never sees half a plot. The SVG terminal options are
// fixed here (size, font, no mouse/JavaScript, no "enhanced" text markup, so '_' and '^' in
// metric names print as they are), and the script starts with `reset session`, which undoes a
// user's ~/.gnuplot: the same script gives the same bytes.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/atomic_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace fragile::study {

/// A gnuplot double-quoted string literal holding `s` as plain text.
inline std::string gnuplot_quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  }
  return out + "\"";
}

struct GnuplotOptions {
  std::string executable = "gnuplot";  ///< a name looked up in PATH, or a path
  int width = 720, height = 480;
  std::chrono::seconds timeout{120};
};

enum class GnuplotStatus { kWritten, kNotFound };

namespace detail {

/// Removes the listed files when the scope ends, however it ends.
struct TempFiles {
  std::vector<std::filesystem::path> paths;
  ~TempFiles() {
    std::error_code ec;
    for (const auto& p : paths) std::filesystem::remove(p, ec);
  }
};

inline std::string read_file_or_empty(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The last `max` bytes of gnuplot's stderr, on one line.
inline std::string excerpt(std::string s, std::size_t max = 600) {
  if (s.size() > max) s = "..." + s.substr(s.size() - max);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s.empty() ? "(no output on stderr)" : s;
}

}  // namespace detail

/// Renders `body` (gnuplot commands after the terminal is set) to `svg`. Returns kNotFound,
/// having written nothing, when the executable does not exist; IoError when gnuplot fails
/// (its exit status and the end of its stderr), runs past the time limit or writes no SVG.
inline GnuplotStatus render_svg(const std::filesystem::path& svg, std::string_view body,
                                const GnuplotOptions& opt = {}) {
  static std::atomic<unsigned> counter{0};
  const std::string tag = fmt::format(".{}.{}", ::getpid(), counter++);
  auto sibling = [&](std::string_view suffix) {
    auto p = svg;
    p += tag;
    p += suffix;
    return p;
  };
  const auto script_path = sibling(".gp"), out_path = sibling(".svg"), err_path = sibling(".err");
  detail::TempFiles temps{{script_path, out_path, err_path}};

  std::string script = fmt::format(
      "reset session\nset encoding utf8\n"
      "set terminal svg size {},{} fixed noenhanced font 'sans,12' background rgb 'white'\n"
      "set output {}\n",
      opt.width, opt.height, gnuplot_quote(out_path.string()));
  script += body;
  script += "\nunset output\n";
  io::write_atomically(script_path, std::string_view(script));

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  std::string exe = opt.executable, arg = script_path.string();
  char* argv[] = {exe.data(), arg.data(), nullptr};
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, exe.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc == ENOENT || rc == ENOTDIR) return GnuplotStatus::kNotFound;
  require<IoError>(rc == 0, "gnuplot: cannot run '{}': {}", exe, std::strerror(rc));

  // Poll rather than block, so a wedged gnuplot is killed instead of hanging the report.
  const auto deadline = std::chrono::steady_clock::now() + opt.timeout;
  int status = 0;
  for (;;) {
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR)
      raise<IoError>("gnuplot: waiting for '{}' failed: {}", exe, std::strerror(errno));
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      raise<IoError>("gnuplot: '{}' did not finish plotting '{}' within {} s", exe, svg.string(),
                     opt.timeout.count());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status)
                                ? fmt::format("exit status {}", WEXITSTATUS(status))
                                : fmt::format("killed by signal {}", WTERMSIG(status));
    raise<IoError>("gnuplot: '{}' failed on '{}' ({}): {}", exe, svg.string(), how,
                   detail::excerpt(detail::read_file_or_empty(err_path)));
  }
  const std::string bytes = detail::read_file_or_empty(out_path);
  require<IoError>(bytes.find("</svg>") != std::string::npos,
                   "gnuplot: '{}' exited 0 but wrote no complete SVG for '{}': {}", exe,
                   svg.string(), detail::excerpt(detail::read_file_or_empty(err_path)));
  io::write_atomically(svg, std::string_view(bytes));
  return GnuplotStatus::kWritten;
}

}  // namespace fragile::study
