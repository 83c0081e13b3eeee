#include "support/test_data.hpp"

#include <fragile/study/progress.hpp>
#include <fragile/study/result_store.hpp>

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
    std::ofstream(dir / "mid.jsonl") << R"({"fragile_result_store": 1, "fingerprint": "x"})"
                                     << "\n garbage\n"
                                     << R"({"key": "a", "value": 1})" << "\n";
  }
  CHECK_THROWS_WITH(ResultStore(dir / "mid.jsonl", "x"), Catch::Contains("line 2"));
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
