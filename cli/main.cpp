// fragile: the command-line tool. Each subcommand lives in its own header and only calls
// library code. Errors are one line on stderr naming the input, with exit status 1 (2 for a
// malformed command line).
#include "allocate_command.hpp"
#include "eval_command.hpp"
#include "inspect_command.hpp"
#include "map_command.hpp"
#include "quantize_command.hpp"
#include "ratios_command.hpp"
#include "report_command.hpp"
#include "shootout_command.hpp"
#include "train_command.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <exception>
#include <functional>
#include <new>

int main(int argc, char** argv) {
  CLI::App app{"fragile: layer-wise mixed-precision weight quantization of transformer LLMs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(fragile::cli::kVersion));
  std::function<int()> action;
  fragile::cli::add_inspect_command(app, action);
  fragile::cli::add_map_command(app, action);
  fragile::cli::add_shootout_command(app, action);
  fragile::cli::add_ratios_command(app, action);
  fragile::cli::add_allocate_command(app, action);
  fragile::cli::add_eval_command(app, action);
  fragile::cli::add_quantize_command(app, action);
  fragile::cli::add_report_command(app, action);
  fragile::cli::add_train_command(app, action);
  fragile::cli::refuse_negative_unsigned(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    fmt::print(stderr, "fragile: error: {} (see --help)\n", e.what());
    return 2;
  }
  try {
    return action ? action() : 0;
  } catch (const fragile::Error& e) {
    fmt::print(stderr, "fragile: error: {}\n", e.what());
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "fragile: error: out of memory (lower --batch, --seqlen or the model size)\n");
  } catch (const std::exception& e) {
    fmt::print(stderr, "fragile: error: {}\n", e.what());
  }
  return 1;
}
