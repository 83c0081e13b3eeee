#include "support/test_data.hpp"

#include <fragile/study/report.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using fragile::study::ReportOptions;
using fragile::study::write_report;
using nlohmann::json;

namespace {

constexpr const char* kKinds[] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                  "gate_proj", "up_proj", "down_proj"};
constexpr const char* kTopLayer = "model.layers.1.mlp.down_proj";

/// A small study: 2 blocks x 7 kinds, 3 metrics, correlations, a shootout of 2 budgets x 3
/// allocators and a ratios section. Two layers have V_l < 0; block 1's down_proj is the most
/// fragile.
json synthetic_results() {
  json layers = json::array();
  for (int b = 0; b < 2; ++b)
    for (int k = 0; k < 7; ++k) {
      const std::string kind = kKinds[k];
      const std::string name = fmt::format("model.layers.{}.{}.{}", b, k < 4 ? "self_attn" : "mlp",
                                           kind);
      const double v = (b == 1 && k == 6) ? 0.9 : 0.02 * (k + 1) + 0.1 * b;
      layers.push_back({{"name", name},
                        {"block", b},
                        {"kind", kind},
                        {"parameters", k < 4 ? 16384 : 45056},
                        {"V_ppl", (b == 0 && (k == 1 || k == 2)) ? -0.01 * k : v},
                        {"V_kl", v / 10},
                        {"U_ppl", v / 2},
                        {"U_kl", 0.001 * (k + 1) * (b + 1)},
                        {"U_top1", 0.99},
                        {"metrics",
                         {{"D_l", 0.0009 * (k + 1) * (b + 1)},
                          {"Fisher trace (MC)", 1e-6 * std::pow(10.0, k % 4) * (b + 1)},
                          {"NSDS", 0.5 + 0.01 * k - 0.1 * b}}}});
    }
  json correlations = json::array();
  for (const char* metric : {"D_l", "Fisher trace (MC)", "NSDS"})
    for (const char* target : {"V_l", "V_l^KL"})
      correlations.push_back({{"metric", metric}, {"target", target}, {"n", 14},
                              {"spearman", 0.61}, {"spearman_p", 0.021},
                              {"spearman_ci", {0.12, 0.86}}, {"pearson", 0.5},
                              {"pearson_p", 0.07}, {"kendall", 0.44}, {"kendall_p", 0.03}});
  json rows = json::array();
  for (double budget : {2.0, 3.0})
    for (const char* alloc : {"uniform", "Fisher-gated", "D_l-greedy"})
      rows.push_back({{"budget", budget},
                      {"configuration", "protect 20% at b+1 (no demotion)"},
                      {"allocator", alloc},
                      {"rule", "top 20% by score at b+1, the rest at b"},
                      {"achieved_bits", budget + 0.2},
                      {"ppl", 40.0 / budget + (alloc[0] == 'u' ? 3 : 1)},
                      {"kl", 0.9 / budget},
                      {"top1", 0.6 + 0.05 * budget},
                      {"bits_histogram", {{"2", 11}, {"3", 3}}}});
  return {
      {"schema", "fragile-results/1"},
      {"command", "map"},
      {"fragile", {{"version", "0.1.0"}, {"git", "v0.1.0-12-gabc1234"}}},
      {"config", {{"model", "examples/models/kjv-tiny"}, {"bits", 2}, {"group_size", 32},
                  {"symmetric", false}, {"budgets", {2.0, 3.0}}, {"seed", nullptr}}},
      {"model", {{"path", "examples/models/kjv-tiny"}, {"architecture", "llama"},
                 {"parameters", 869504}, {"linears", 14}, {"fingerprint", "9f0c"}}},
      {"data", {{"calibration", {{"path", "calib.txt"}, {"windows", 32}, {"seqlen", 128},
                                 {"tokens", 4096}}},
                {"evaluation", {{"path", "eval.txt"}, {"windows", 40}, {"seqlen", 128},
                                {"tokens", 5080}, {"protocol", "gptq"}}}}},
      {"timings", {{"load", 0.1}, {"metric_pass", 2.3}, {"restore_one", 10.2}}},
      {"warnings", {"calibration text is short"}},
      {"map", {{"setting", "rtn2g32"}, {"description", "RTN 2-bit, group 32, asymmetric"},
               {"bits", 2}, {"fp_ppl", 17.29}, {"base_ppl", 28.4}, {"base_kl", 0.41},
               {"base_top1", 0.72},
               {"regime", {{"name", "degraded"}, {"ppl_ratio", 1.64}, {"minimal_below", 1.1},
                           {"catastrophic_above", 10.0}}},
               {"metrics", {{{"name", "D_l"}, {"description", "1/2 E[(g.dy)^2] per token"}},
                            {{"name", "Fisher trace (MC)"}, {"description", "MC Fisher"}},
                            {{"name", "NSDS"}, {"description", "data-free"}}}},
               {"layers", layers},
               {"correlations", correlations}}},
      {"shootout", {{"accounting", "paper"}, {"budgets", {2.0, 3.0}}, {"rows", rows}}},
      {"ratios", {{"loss_evaluations", 123}, {"loss_evaluation_seconds", 12.3},
                  {"rows", {{{"setting", "W2 (b_H=3)"}, {"ratio", "uniform"},
                             {"quantization", "plain"}, {"achieved_bits", 2.1}, {"ppl", 40.1},
                             {"kl", 0.5}, {"top1", 0.6}},
                            {{"setting", "W2 (b_H=3)"}, {"ratio", "optimized"},
                             {"quantization", "hybrid"}, {"achieved_bits", 2.1},
                             {"ppl", nullptr}, {"kl", 0.4}, {"top1", 0.65}}}}}}};
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find("\r\n", start);
    if (end == std::string::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 2;
  }
  return out;
}

/// Names of the files below `dir` (relative, sorted).
std::set<std::string> files_under(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

std::set<std::string> svgs_in(const fs::path& dir) {
  std::set<std::string> out;
  if (!fs::is_directory(dir / "plots")) return out;
  for (const auto& e : fs::directory_iterator(dir / "plots"))
    out.insert(e.path().filename().string());
  return out;
}

/// The plots/... files index.html shows.
std::set<std::string> html_images(const fs::path& dir) {
  const std::string html = slurp(dir / "index.html");
  std::set<std::string> out;
  const std::regex img(R"re(<img src="plots/([^"]+)")re");
  for (std::sregex_iterator it(html.begin(), html.end(), img), end; it != end; ++it)
    out.insert((*it)[1]);
  return out;
}

bool gnuplot_installed() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  for (std::size_t start = 0; start <= dirs.size();) {
    auto end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const fs::path exe = fs::path(dirs.substr(start, end - start)) / "gnuplot";
    if (::access(exe.c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

#define FRAGILE_REQUIRE_GNUPLOT()                                           \
  if (!gnuplot_installed()) {                                               \
    WARN("skipped: gnuplot is not installed (apt-get install gnuplot-nox)"); \
    return;                                                                 \
  }

const std::set<std::string> kAllPlots = {
    "metric_D_l.svg",        "metric_Fisher_trace_MC.svg", "metric_NSDS.svg",
    "fragility_heatmap.svg", "v_distribution.svg",         "d_vs_ukl.svg",
    "shootout_ppl.svg",      "shootout_kl.svg"};

}  // namespace

TEST_CASE("report: tables and pages", "[report]") {
  const auto dir = fragile::test::scratch_dir("report_tables");
  const auto files = write_report(synthetic_results(), dir, ReportOptions{.gnuplot = ""});
  for (const char* f : {"layers.csv", "correlations.csv", "shootout.csv", "ratios.csv",
                        "summary.md", "index.html"}) {
    INFO(f);
    CHECK(fs::is_regular_file(dir / f));
    CHECK(std::find(files.written.begin(), files.written.end(), dir / f) != files.written.end());
  }
  CHECK(files.written.size() == 6);

  const auto csv = lines(slurp(dir / "layers.csv"));
  REQUIRE(csv.size() == 15);
  CHECK(csv[0] == "name,block,kind,parameters,V_ppl,V_kl,U_ppl,U_kl,D_l,Fisher trace (MC),NSDS");
  CHECK(csv[1] == "model.layers.0.self_attn.q_proj,0,q_proj,16384,0.02,0.002,0.01,0.001,0.0009,"
                  "1e-06,0.5");
  CHECK(lines(slurp(dir / "correlations.csv")).size() == 7);
  CHECK(lines(slurp(dir / "shootout.csv")).size() == 7);
  const auto ratios = lines(slurp(dir / "ratios.csv"));
  REQUIRE(ratios.size() == 3);
  CHECK(ratios[2] == "W2 (b_H=3),optimized,hybrid,2.1,n/a,0.4,0.65");  // null PPL

  const std::string md = slurp(dir / "summary.md");
  CHECK(md.find(kTopLayer) != std::string::npos);
  CHECK(md.find("| 1 | " + std::string(kTopLayer) + " | 0.9 |") != std::string::npos);
  CHECK(md.find("Layers with V_l < 0: 2 of 14.") != std::string::npos);
  CHECK(md.find("| D_l | V_l | 14 | 0.61 (0.021) | [0.12, 0.86] | 0.5 (0.07) | 0.44 (0.03) |") !=
        std::string::npos);
  CHECK(md.find("degraded (PPL ratio 1.64; minimal below 1.1, catastrophic above 10)") !=
        std::string::npos);
  CHECK(md.find("- calibration text is short") != std::string::npos);
  CHECK(md.find("| group_size | 32 |") != std::string::npos);
  // Fragility by kind: down_proj (mean of 0.14 and 0.9) first.
  const auto kinds = md.find("## Fragility by layer kind");
  REQUIRE(kinds != std::string::npos);
  CHECK(md.find("| down_proj | 2 |", kinds) < md.find("| up_proj | 2 |", kinds));
  // The shootout grouped by budget: every 2-bit row before any 3-bit row.
  CHECK(md.rfind("| 2 | protect 20%") < md.find("| 3 | protect 20%"));

  const std::string html = slurp(dir / "index.html");
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find(kTopLayer) != std::string::npos);
  CHECK(html.find("no gnuplot executable given: plots skipped") != std::string::npos);
  CHECK(html.find("http") == std::string::npos);  // no external resources
}

TEST_CASE("report: text from the document is escaped in every format", "[report]") {
  auto doc = synthetic_results();
  doc["warnings"] = {"<script>alert('x & y')</script>"};
  doc["map"]["layers"][13]["name"] = "odd,\"name\"|<b>";  // the most fragile layer
  const auto dir = fragile::test::scratch_dir("report_escaping");
  write_report(doc, dir, {.gnuplot = ""});
  const std::string html = slurp(dir / "index.html");
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("&lt;script&gt;alert(&#39;x &amp; y&#39;)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("odd,&quot;name&quot;|&lt;b&gt;") != std::string::npos);
  CHECK(slurp(dir / "layers.csv").find("\r\n\"odd,\"\"name\"\"|<b>\",1,") != std::string::npos);
  const std::string md = slurp(dir / "summary.md");
  CHECK(md.find("\\<script>alert('x & y')\\</script>") != std::string::npos);
  CHECK(md.find("| 1 | odd,\"name\"\\|\\<b> | 0.9 |") != std::string::npos);
}

TEST_CASE("report: plots", "[report]") {
  FRAGILE_REQUIRE_GNUPLOT();
  const auto dir = fragile::test::scratch_dir("report_plots");
  const auto files = write_report(synthetic_results(), dir);
  CHECK(files.warnings.empty());
  CHECK(svgs_in(dir) == kAllPlots);
  CHECK(html_images(dir) == kAllPlots);  // every SVG shown, and no other
  for (const auto& f : kAllPlots) {
    INFO(f);
    const std::string svg = slurp(dir / "plots" / f);
    CHECK(svg.find("<svg") != std::string::npos);
    CHECK(svg.find("</svg>") != std::string::npos);
    CHECK(svg.find("<script") == std::string::npos);
    CHECK(std::find(files.written.begin(), files.written.end(), dir / "plots" / f) !=
          files.written.end());
  }
  const std::string md = slurp(dir / "summary.md");
  for (const auto& f : kAllPlots) CHECK(md.find("](plots/" + f + ")") != std::string::npos);
  CHECK(slurp(dir / "plots/metric_D_l.svg").find("Spearman ρ = 0.61 (p = 0.021)") !=
        std::string::npos);
  CHECK(slurp(dir / "plots/v_distribution.svg").find("(2 negative)") != std::string::npos);
}

TEST_CASE("report: the same document gives the same bytes", "[report]") {
  ReportOptions opt;
  if (!gnuplot_installed()) {
    WARN("gnuplot is not installed: comparing the report without plots");
    opt.gnuplot = "";
  }
  const auto a = fragile::test::scratch_dir("report_same_a");
  const auto b = fragile::test::scratch_dir("report_same_b");
  write_report(synthetic_results(), a, opt);
  write_report(synthetic_results(), b, opt);
  write_report(synthetic_results(), b, opt);  // a re-render over its own output, too
  const auto names = files_under(a);
  CHECK(names == files_under(b));
  CHECK(names.size() >= 6);
  for (const auto& f : names) {
    INFO(f);
    CHECK(slurp(a / f) == slurp(b / f));
  }
}

TEST_CASE("report: sections the document lacks are left out", "[report]") {
  const auto dir = fragile::test::scratch_dir("report_no_shootout");
  ReportOptions opt;
  if (!gnuplot_installed()) {
    WARN("gnuplot is not installed: checking the tables and pages only");
    opt.gnuplot = "";
  }
  write_report(synthetic_results(), dir, opt);
  auto doc = synthetic_results();
  doc.erase("shootout");
  doc.erase("ratios");
  doc["map"].erase("correlations");
  write_report(doc, dir, opt);  // over the full report: its extra files must go
  CHECK_FALSE(fs::exists(dir / "shootout.csv"));
  CHECK_FALSE(fs::exists(dir / "ratios.csv"));
  CHECK_FALSE(fs::exists(dir / "correlations.csv"));
  CHECK(fs::exists(dir / "layers.csv"));
  const std::string html = slurp(dir / "index.html");
  CHECK(html.find("Allocator shootout") == std::string::npos);
  CHECK(html.find("shootout.csv") == std::string::npos);
  CHECK(html.find("Spearman") == std::string::npos);
  if (!opt.gnuplot.empty()) {
    auto expected = kAllPlots;
    expected.erase("shootout_ppl.svg");
    expected.erase("shootout_kl.svg");
    CHECK(svgs_in(dir) == expected);
    CHECK(html_images(dir) == expected);
  }

  // A document with nothing but a shootout: no layer tables or map plots.
  json only = {{"schema", "fragile-results/1"}, {"shootout", synthetic_results()["shootout"]}};
  const auto dir2 = fragile::test::scratch_dir("report_only_shootout");
  write_report(only, dir2, opt);
  CHECK_FALSE(fs::exists(dir2 / "layers.csv"));
  CHECK(fs::exists(dir2 / "shootout.csv"));
  if (!opt.gnuplot.empty())
    CHECK(svgs_in(dir2) == std::set<std::string>{"shootout_kl.svg", "shootout_ppl.svg"});
}

TEST_CASE("report: sparse and degenerate documents still render", "[report]") {
  ReportOptions opt;
  if (!gnuplot_installed()) {
    WARN("gnuplot is not installed: rendering without plots");
    opt.gnuplot = "";
  }
  auto check = [&](const json& doc, const std::string& name) {
    INFO(name);
    const auto dir = fragile::test::scratch_dir("report_sparse_" + name);
    CHECK_NOTHROW(write_report(doc, dir, opt));
    CHECK(fs::exists(dir / "index.html"));
    CHECK(html_images(dir) == svgs_in(dir));
  };
  check(json::object(), "empty");
  // One layer, every number null.
  check({{"map", {{"metrics", {{{"name", "D_l"}}}},
                  {"layers", {{{"name", "a"}, {"block", 0}, {"kind", "q_proj"}, {"V_ppl", nullptr},
                               {"metrics", {{"D_l", nullptr}}}}}}}}},
        "all_null");
  // Every value equal (zero-width ranges), one shootout point.
  json layers = json::array();
  for (int i = 0; i < 3; ++i)
    layers.push_back({{"name", fmt::format("l{}", i)}, {"block", 0}, {"kind", "q_proj"},
                      {"V_ppl", 0.5}, {"U_kl", 0.5}, {"metrics", {{"D_l", 0.5}}}});
  check({{"map", {{"metrics", {{{"name", "D_l"}}}}, {"layers", layers}}},
         {"shootout", {{"rows", {{{"budget", 3}, {"allocator", "uniform"}, {"ppl", 20}}}}}}},
        "constant");
  // V_l all negative, no kinds or blocks.
  check({{"map", {{"layers", {{{"name", "a"}, {"V_ppl", -0.5}},
                              {{"name", "b"}, {"V_ppl", -0.1}}}}}}},
        "negative");
}

TEST_CASE("report: a malformed document is a ConfigError naming the field", "[report]") {
  const auto dir = fragile::test::scratch_dir("report_malformed");
  auto check = [&](json doc, const std::string& field) {
    INFO(field);
    CHECK_THROWS_AS(write_report(doc, dir / "out", {.gnuplot = ""}), fragile::ConfigError);
    CHECK_THROWS_WITH(write_report(doc, dir / "out", {.gnuplot = ""}),
                      Catch::Contains("'" + field + "'"));
    CHECK_FALSE(fs::exists(dir / "out"));  // nothing written
  };
  auto doc = synthetic_results();
  doc["map"]["layers"] = {{"name", "x"}};
  check(doc, "map.layers");
  doc = synthetic_results();
  doc["map"]["layers"][3].erase("name");
  check(doc, "map.layers[3].name");
  doc = synthetic_results();
  doc["map"]["layers"][0]["V_ppl"] = "0.5";
  check(doc, "map.layers[0].V_ppl");
  doc = synthetic_results();
  doc["map"]["layers"][0]["block"] = 1.5;
  check(doc, "map.layers[0].block");
  doc = synthetic_results();
  doc["map"]["correlations"][1]["spearman_ci"] = {0.1};
  check(doc, "map.correlations[1].spearman_ci");
  doc = synthetic_results();
  doc["shootout"]["rows"][2]["ppl"] = json::array();
  check(doc, "shootout.rows[2].ppl");
  doc = synthetic_results();
  doc["schema"] = "fragile-results/2";
  check(doc, "schema");
  CHECK_THROWS_AS(write_report(json::array(), dir / "out", {.gnuplot = ""}), fragile::ConfigError);
}

TEST_CASE("report: an unwritable output folder is an IoError naming it", "[report]") {
  const auto dir = fragile::test::scratch_dir("report_unwritable");
  std::ofstream(dir / "file") << "a regular file where the folder should be";
  CHECK_THROWS_AS(write_report(synthetic_results(), dir / "file", {.gnuplot = ""}),
                  fragile::IoError);
  CHECK_THROWS_WITH(write_report(synthetic_results(), dir / "file", {.gnuplot = ""}),
                    Catch::Contains((dir / "file").string()));
  CHECK_THROWS_AS(write_report(synthetic_results(), dir / "file" / "sub", {.gnuplot = ""}),
                  fragile::IoError);
}

TEST_CASE("report: without gnuplot the plots are skipped with a warning", "[report]") {
  const auto dir = fragile::test::scratch_dir("report_no_gnuplot");
  const auto files = write_report(synthetic_results(), dir, {.gnuplot = "/nonexistent/gnuplot"});
  REQUIRE(files.warnings.size() == 1);
  CHECK(files.warnings[0] == "gnuplot not found: plots skipped");
  CHECK(svgs_in(dir).empty());  // no SVG, and no temporary file left either
  CHECK(html_images(dir).empty());
  CHECK(slurp(dir / "index.html").find("gnuplot not found: plots skipped") != std::string::npos);
  CHECK(slurp(dir / "summary.md").find("gnuplot not found: plots skipped") != std::string::npos);
  for (const auto& f : files.written) CHECK(f.extension() != ".svg");
}

TEST_CASE("report: a failing or stuck gnuplot is an IoError", "[report]") {
  const auto dir = fragile::test::scratch_dir("report_bad_gnuplot");
  CHECK_THROWS_WITH(write_report(synthetic_results(), dir / "a", {.gnuplot = "/bin/false"}),
                    Catch::Contains("exit status 1") && Catch::Contains("metric_D_l.svg"));
  // Exits 0 without writing the SVG.
  CHECK_THROWS_WITH(write_report(synthetic_results(), dir / "b", {.gnuplot = "/bin/true"}),
                    Catch::Contains("no complete SVG"));
  // Never returns: killed at the time limit.
  const auto stuck = dir / "stuck.sh";
  std::ofstream(stuck) << "#!/bin/sh\nexec sleep 100\n";
  fs::permissions(stuck, fs::perms::owner_all);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(write_report(synthetic_results(), dir / "c",
                                 {.gnuplot = stuck.string(),
                                  .gnuplot_timeout = std::chrono::seconds(1)}),
                    Catch::Contains("did not finish"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
  CHECK(svgs_in(dir / "c").empty());  // temporary files removed
  if (gnuplot_installed()) {
    // gnuplot's own error (a script it rejects), with its stderr.
    const auto bad = dir / "bad.svg";
    CHECK_THROWS_WITH(fragile::study::render_svg(bad, "plot $nothing using 1:2\n"),
                      Catch::Contains("exit status") && Catch::Contains("nothing"));
    CHECK_FALSE(fs::exists(bad));
  }
}

TEST_CASE("report: plot scripts", "[report]") {
  auto doc = synthetic_results();
  doc["map"]["layers"][0]["U_kl"] = 0.0;      // omitted from the log-log plot, and counted
  doc["map"]["layers"][1]["U_kl"] = nullptr;  // no value
  std::swap(doc["map"]["layers"][0], doc["map"]["layers"][6]);  // kinds out of order
  doc["map"]["layers"][13]["kind"] = "mlp.down_proj";  // the suffix form of older results
  const auto plots = fragile::study::report_plots(fragile::study::read_report_data(doc));
  auto script = [&](const std::string& file) {
    for (const auto& p : plots)
      if (p.file == file) return p.script;
    FAIL("no plot " << file);
    return std::string();
  };
  // Fisher trace spans 3 decades: log x; NSDS is in [0.4, 0.56]: linear.
  CHECK(script("metric_Fisher_trace_MC.svg").find("set logscale x") != std::string::npos);
  CHECK(script("metric_NSDS.svg").find("set logscale") == std::string::npos);
  CHECK(script("d_vs_ukl.svg").find("layers omitted: 1 (value <= 0 on an axis); 1 without both "
                                    "values") != std::string::npos);
  CHECK(script("d_vs_ukl.svg").find("title \"12 layers\"") != std::string::npos);
  CHECK(script("fragility_heatmap.svg")
            .find("set xtics (\"q_proj\" 0, \"k_proj\" 1, \"v_proj\" 2, \"o_proj\" 3, "
                  "\"gate_proj\" 4, \"up_proj\" 5, \"down_proj\" 6)\n") !=
        std::string::npos);
  CHECK(script("shootout_ppl.svg").find("title \"Fisher-gated: protect 20% at b+1 (no demotion)\"")
        != std::string::npos);
  CHECK(script("v_distribution.svg").find("title \"V_l < 0 (2 layers)\"") != std::string::npos);
}

TEST_CASE("report: a layer kind that is not a linear kind is refused by name", "[report]") {
  auto doc = synthetic_results();
  doc["map"]["layers"][3]["kind"] = "lm_head";
  CHECK_THROWS_WITH(fragile::study::read_report_data(doc),
                    Catch::Contains("'map.layers[3].kind' is 'lm_head'") &&
                        Catch::Contains("expected one of q_proj"));
}

TEST_CASE("report: TextTable renders CSV, Markdown and HTML", "[report]") {
  fragile::study::TextTable t;
  t.header = {"a", "b"};
  t.numeric = {false, true};
  t.rows = {{"x,y", "1"}, {"say \"hi\"", "2"}, {"line\nbreak", "3"}, {"p|q", "4"}};
  CHECK(fragile::study::to_csv(t) ==
        "a,b\r\n\"x,y\",1\r\n\"say \"\"hi\"\"\",2\r\n\"line\nbreak\",3\r\np|q,4\r\n");
  CHECK(fragile::study::to_markdown(t) ==
        "| a | b |\n|---|---:|\n| x,y | 1 |\n| say \"hi\" | 2 |\n| line break | 3 |\n"
        "| p\\|q | 4 |\n");
  CHECK(fragile::study::to_html(t).find("<td>say &quot;hi&quot;</td><td class=\"num\">2</td>") !=
        std::string::npos);
}

// Renders the synthetic report where the browser check (scripts/check_report.sh, a ctest) finds
// it: $FRAGILE_TEST_TMP/report_chromium.
TEST_CASE("report: render for the browser check", "[report][chromium]") {
  const auto dir = fragile::test::scratch_dir("report_chromium");
  ReportOptions opt;
  if (!gnuplot_installed()) {
    WARN("gnuplot is not installed: the browser check sees a report without plots");
    opt.gnuplot = "";
  }
  write_report(synthetic_results(), dir, opt);
  CHECK(fs::exists(dir / "index.html"));
}
