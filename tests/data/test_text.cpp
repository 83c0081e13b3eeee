// Text readers: strict UTF-8 with byte offsets, WikiText-2 raw rows joined as the HF dataset and
// GPTQ do (reference numbers computed with Python: rows = [r if r.strip() else "" for r in
// open(f, encoding="utf-8")]; "\n\n".join(rows)), TinyStories documents.
#include "support/test_data.hpp"

#include <fragile/io/text.hpp>

#include <fstream>
#include <numeric>

using fragile::IoError;
using namespace fragile::io;

namespace {

std::string message_of_read(const std::filesystem::path& p) {
  try {
    (void)read_text_file(p);
  } catch (const IoError& e) {
    return e.what();
  }
  FAIL("no IoError for " << p);
  return {};
}


}  // namespace

TEST_CASE("text: UTF-8 validation accepts well-formed text and pinpoints bad bytes", "[text]") {
  CHECK_FALSE(find_invalid_utf8(""));
  CHECK_FALSE(find_invalid_utf8("plain ASCII\n"));
  CHECK_FALSE(find_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  CHECK_FALSE(find_invalid_utf8("\xF4\x8F\xBF\xBF"));                          // U+10FFFF
  CHECK_FALSE(find_invalid_utf8("\xED\x9F\xBF"));                              // U+D7FF
  CHECK_FALSE(find_invalid_utf8("\xEF\xBB\xBFx"));                             // BOM kept

  struct Bad {
    std::string text;
    std::size_t offset;
  };
  const Bad bad[] = {
      {"ab\x80", 2},                  // lone continuation byte
      {"ab\xC0\x80", 2},              // overlong NUL
      {"\xC1\xBF", 0},                // overlong
      {"x\xE0\x80\x80", 1},           // overlong 3-byte
      {"xy\xF0\x80\x80\x80", 2},      // overlong 4-byte
      {"\xED\xA0\x80", 0},            // UTF-16 surrogate
      {"ok\xF4\x90\x80\x80", 2},      // above U+10FFFF
      {"\xF5\x80\x80\x80", 0},        // invalid lead
      {"\xFF", 0},                    //
      {"abc\xE2\x82", 3},             // truncated at end
      {"\xE2\x82(", 0},               // truncated before ASCII
      {"\xC3\xA9\xC3", 2},            // valid then truncated
      {"\xF0\x9F\x98", 0},            // truncated 4-byte
  };
  for (const auto& [text, offset] : bad) {
    INFO("offset " << offset);
    REQUIRE(find_invalid_utf8(text).has_value());
    CHECK(*find_invalid_utf8(text) == offset);
  }
}

TEST_CASE("text: files must exist, be non-empty and be UTF-8", "[text][bad]") {
  const auto dir = fragile::test::scratch_dir("text_files");
  std::ofstream(dir / "good.txt", std::ios::binary) << "h\xC3\xA9llo\n";
  CHECK(read_text_file(dir / "good.txt") == "h\xC3\xA9llo\n");

  std::ofstream(dir / "empty.txt", std::ios::binary).close();
  CHECK_THAT(message_of_read(dir / "empty.txt"), Catch::Contains("empty.txt") && Catch::Contains("empty"));
  CHECK_THAT(message_of_read(dir / "absent.txt"), Catch::Contains("absent.txt"));

  std::ofstream(dir / "latin1.txt", std::ios::binary) << "line one\ncaf\xE9 au lait\n";
  CHECK_THAT(message_of_read(dir / "latin1.txt"),
             Catch::Contains("latin1.txt") && Catch::Contains("byte offset 12") &&
                 Catch::Contains("0xE9"));
  CHECK_THROWS_AS(read_wikitext_raw(dir / "latin1.txt"), IoError);
  CHECK_THROWS_AS(read_tinystories(dir / "empty.txt"), IoError);
  std::ofstream(dir / "only_separators.txt", std::ios::binary) << "<|endoftext|>\n\n<|endoftext|>\n";
  CHECK_THAT(std::string([&] {
               try {
                 (void)read_tinystories(dir / "only_separators.txt");
               } catch (const IoError& e) {
                 return std::string(e.what());
               }
               return std::string();
             }()),
             Catch::Contains("no non-blank story"));
}

TEST_CASE("text: WikiText rows are lines, blank lines become empty rows", "[text]") {
  CHECK(wikitext_rows("a\n \nb\n") == std::vector<std::string>{"a\n", "", "b\n"});
  CHECK(wikitext_rows("a\r\n\t\r\nlast") == std::vector<std::string>{"a\n", "", "last"});
  CHECK(wikitext_rows("x\ry") == std::vector<std::string>{"x\n", "y"});
  CHECK(wikitext_rows("").empty());
  CHECK(join_rows({"a\n", "", "b\n"}) == "a\n\n\n\n\nb\n");  // a\n + \n\n + "" + \n\n + b\n
  CHECK(join_rows({"only"}) == "only");
  CHECK(join_rows({}).empty());
  CHECK(join_rows({"a", "b", "c"}, " ") == "a b c");
}

TEST_CASE("text: wiki.test.raw joined as the HF dataset rows with \\n\\n", "[text][data]") {
  FRAGILE_REQUIRE_DATA_FILE(path, "text/wikitext-2-raw/wiki.test.raw");
  const auto rows = wikitext_rows(read_text_file(path));
  CHECK(rows.size() == 4358);
  CHECK(rows[0].empty());
  CHECK(rows[1] == " = Robert Boulter = \n");
  const auto joined = read_wikitext_raw(path);
  CHECK(joined.size() == 1296370);  // bytes of Python's "\n\n".join(rows).encode()
  CHECK(joined.rfind("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is", 0) == 0);
  CHECK(joined.ends_with("Eddie Pelkey . \n\n\n"));
}

TEST_CASE("text: TinyStories files split into stripped stories", "[text]") {
  const std::string text =
      "First story.\n\nSecond paragraph.\n<|endoftext|>\n  Second story.  \n<|endoftext|>\r\n"
      "\n<|endoftext|>\nThird <|endoftext|> inline stays.\n";
  const auto docs = split_documents(text);
  REQUIRE(docs.size() == 3);
  CHECK(docs[0] == "First story.\n\nSecond paragraph.");
  CHECK(docs[1] == "Second story.");
  CHECK(docs[2] == "Third <|endoftext|> inline stays.");
  CHECK(split_documents("no separator at all") == std::vector<std::string>{"no separator at all"});
  CHECK(split_documents("a\n--\nb", "--") == std::vector<std::string>{"a", "b"});
}

TEST_CASE("text: the shared TinyStories files hold 500 and 667 stories", "[text][data]") {
  FRAGILE_REQUIRE_DATA_FILE(valid, "text/tinystories/valid_0001-0500.txt");
  FRAGILE_REQUIRE_DATA_FILE(calib, "text/tinystories/calib_data00_667.txt");
  auto bytes = [](const std::vector<std::string>& d) {
    return std::accumulate(d.begin(), d.end(), std::size_t{0},
                           [](std::size_t n, const std::string& s) { return n + s.size(); });
  };
  const auto v = read_tinystories(valid);
  CHECK(v.size() == 500);
  CHECK(v.front().rfind("Spot. Spot saw the shiny car and said, \"", 0) == 0);
  CHECK(v.back().ends_with("part of the family ever since."));
  CHECK(bytes(v) == 405231);
  const auto c = read_tinystories(calib);
  CHECK(c.size() == 667);
  CHECK(c.front().rfind("Lily and Ben are friends. They like to p", 0) == 0);
  CHECK(bytes(c) == 510260);
  for (const auto& d : v) CHECK(d.find("<|endoftext|>") == std::string::npos);
}
