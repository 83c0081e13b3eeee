#include "support/test_data.hpp"

#include <fragile/study/progress.hpp>
#include <fragile/study/result_store.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using fragile::study::ResultStore;

TEST_CASE("ResultStore persists results and resumes") {
  const auto dir = fragile::test::scratch_dir("result_store_resume");
  const auto path = dir / "sweep.jsonl";
  {
    ResultStore s(path, "stories260K|rtn3g32|seed0");
    s.put("model.layers.0.self_attn.q_proj", {{"V", 0.25}});
    s.put("model.layers.0.self_attn.k_proj", {{"V", -0.5}});
    CHECK(s.size() == 2);
  }
  ResultStore again(path, "stories260K|rtn3g32|seed0");
  CHECK(again.size() == 2);
  CHECK(again.contains("model.layers.0.self_attn.k_proj"));
  CHECK((*again.get("model.layers.0.self_attn.q_proj"))["V"] == 0.25);
  CHECK(again.keys().front() == "model.layers.0.self_attn.q_proj");
  again.put("model.layers.0.self_attn.q_proj", {{"V", 0.3}});  // override keeps order
  ResultStore third(path, "stories260K|rtn3g32|seed0");
  CHECK((*third.get("model.layers.0.self_attn.q_proj"))["V"] == 0.3);
  CHECK(third.keys().size() == 2);
}

TEST_CASE("ResultStore drops a torn last line and refuses foreign fingerprints") {
  const auto dir = fragile::test::scratch_dir("result_store_torn");
  const auto path = dir / "sweep.jsonl";
  {
    ResultStore s(path, "fp-a");
    s.put("a", 1);
  }
  {
    std::ofstream out(path, std::ios::app);
    out << R"({"key": "b", "val)";  // the process died mid-write
  }
  {
    ResultStore s(path, "fp-a");
    CHECK(s.size() == 1);
    CHECK_FALSE(s.contains("b"));
    s.put("b", 2);  // appends cleanly after the truncated tail
  }
  ResultStore s(path, "fp-a");
  CHECK(s.size() == 2);
  CHECK(*s.get("b") == 2);
  CHECK_THROWS_AS(ResultStore(path, "fp-b"), fragile::ConfigError);
  CHECK_THROWS_WITH(ResultStore(path, "fp-b"), Catch::Contains("fp-a") && Catch::Contains("fp-b"));
}

TEST_CASE("ResultStore rejects corrupt files") {
  const auto dir = fragile::test::scratch_dir("result_store_corrupt");
  {
    std::ofstream(dir / "not_store.jsonl") << "{\"hello\": 1}\n";
  }
  CHECK_THROWS_AS(ResultStore(dir / "not_store.jsonl", "x"), fragile::IoError);
  {
    std::ofstream(dir / "mid.jsonl") << R"({"fragile_result_store": 2, "fingerprint": "x"})"
                                     << "\n garbage\n"
                                     << R"({"key": "a", "value": 1})" << "\n";
  }
  CHECK_THROWS_WITH(ResultStore(dir / "mid.jsonl", "x"), Catch::Contains("line 2"));
}

namespace {
std::vector<std::string> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}
void write_lines(const std::filesystem::path& p, const std::vector<std::string>& lines) {
  std::ofstream out(p, std::ios::trunc);
  for (const auto& l : lines) out << l << '\n';
}
}  // namespace

TEST_CASE("ResultStore refuses records edited or damaged on disk") {
  const auto dir = fragile::test::scratch_dir("result_store_checksum");
  const auto path = dir / "sweep.jsonl";
  {
    ResultStore s(path, "fp");
    s.put("oracle/base", {{"ppl", 17.5}, {"kl", 0.25}});
    s.put("oracle/l0", {{"ppl", 18.0}, {"kl", 0.5}});
  }
  const auto lines = read_lines(path);
  REQUIRE(lines.size() == 3);
  SECTION("an edited value") {
    auto edited = lines;
    const auto at = edited[1].find("17.5");
    REQUIRE(at != std::string::npos);
    edited[1].replace(at, 4, "1e300");
    write_lines(path, edited);
    CHECK_THROWS_AS(ResultStore(path, "fp"), fragile::IoError);
    CHECK_THROWS_WITH(ResultStore(path, "fp"),
                      Catch::Contains("line 2") && Catch::Contains("oracle/base") &&
                          Catch::Contains("checksum"));
  }
  SECTION("a record without its checksum") {
    write_lines(path, {lines[0], R"({"key": "oracle/base", "value": {"ppl": -5}})"});
    CHECK_THROWS_WITH(ResultStore(path, "fp"), Catch::Contains("line 2"));
  }
  SECTION("a complete but invalid last line is corruption, not a torn write") {
    write_lines(path, {lines[0], lines[1], R"({"key": "oracle/l0", "value": )"});
    CHECK_THROWS_WITH(ResultStore(path, "fp"), Catch::Contains("line 3") && Catch::Contains("not valid JSON"));
    CHECK(read_lines(path).size() == 3);  // nothing was deleted
  }
  SECTION("a store of the format without checksums") {
    write_lines(path, {R"({"fragile_result_store": 1, "fingerprint": "fp"})"});
    CHECK_THROWS_WITH(ResultStore(path, "fp"), Catch::Contains("format version 1"));
  }
  SECTION("untouched, it reads back") {
    ResultStore s(path, "fp");
    CHECK(s.size() == 2);
    CHECK((*s.get("oracle/l0"))["ppl"] == 18.0);
  }
}

TEST_CASE("Progress reports counts, resumes and ETA") {
  std::vector<std::string> lines;
  fragile::study::Progress p("RestoreOne", 4, 1, [&](const std::string& s) { lines.push_back(s); },
                             std::chrono::milliseconds(0));
  p.tick("layer 1");
  p.tick();
  p.tick();
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].find("RestoreOne: 2/4 (50%)") == 0);
  CHECK(lines[0].find("[layer 1]") != std::string::npos);
  CHECK(lines[2].find("4/4 (100%)") != std::string::npos);
  CHECK(lines[2].find("ETA 0s") != std::string::npos);
  CHECK(fragile::study::format_duration(3725) == "1h02m");
  CHECK(fragile::study::format_duration(185) == "3m05s");
}
