// Deliberately broken safetensors files and shard indexes, generated into a scratch folder: each
// must raise fragile::IoError carrying its documented key phrase and the file's name (and never
// UB: this suite also runs under ASan/UBSan).
#include <cstring>
#include <sys/stat.h>
#include <fstream>

#include "fragile/io/load_model.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/io/text.hpp"
#include "fragile/io/tokenizer/tokenizer.hpp"
#include "support/test_data.hpp"

using Catch::Contains;
using fragile::DType;
using fragile::IoError;
using fragile::io::open_safetensors;
using fragile::io::parse_safetensors_header;
namespace fs = std::filesystem;

namespace {

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int k = 0; k < 8; ++k) s[k] = static_cast<char>((n >> (8 * k)) & 0xffu);
  return s;
}

/// A safetensors file with the given header text and `data_size` bytes of data.
std::string file_with(const std::string& header, std::size_t data_size) {
  return le64(header.size()) + header + std::string(data_size, '\x01');
}

/// Writes `content` as <dir>/<name>, then checks that opening it throws IoError mentioning
/// `phrase` and the file.
void expect_broken(const fs::path& dir, const std::string& name, const std::string& content,
                   const std::string& phrase) {
  INFO("broken file " << name << ", expecting '" << phrase << "'");
  const auto p = dir / name;
  write_bytes(p, content);
  CHECK_THROWS_AS(open_safetensors(p), IoError);
  CHECK_THROWS_WITH(open_safetensors(p), Contains(phrase) && Contains(name));
  // The pure parser gives the same diagnosis.
  std::vector<std::byte> bytes(content.size());
  if (!content.empty()) std::memcpy(bytes.data(), content.data(), content.size());
  CHECK_THROWS_WITH(parse_safetensors_header(bytes, name), Contains(phrase));
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":{}}})", name, dtype, shape,
                     offsets);
}

/// A valid two-tensor file (a: F32 [2] at [0,8], b: BF16 [3] at [8,14]).
std::string valid_file() {
  return file_with(fmt::format("{{{},{}}}", entry("a", "F32", "[2]", "[0,8]"),
                               entry("b", "BF16", "[3]", "[8,14]")),
                   14);
}

}  // namespace

TEST_CASE("broken safetensors files raise IoError with the documented message",
          "[io][safetensors][broken]") {
  const auto dir = fragile::test::scratch_dir("broken_safetensors");
  // Sanity: the base file used below is valid.
  write_bytes(dir / "valid.safetensors", valid_file());
  REQUIRE(open_safetensors(dir / "valid.safetensors").size() == 2);

  const auto valid = valid_file();
  expect_broken(dir, "empty.safetensors", "", "shorter than the 8-byte header length");
  expect_broken(dir, "tiny.safetensors", "abc", "shorter than the 8-byte header length");
  expect_broken(dir, "truncated_data.safetensors", valid.substr(0, valid.size() - 3),
                "end beyond the data section");
  expect_broken(dir, "truncated_header.safetensors", valid.substr(0, 20),
                "runs past the end of the file");
  expect_broken(dir, "length_beyond.safetensors", le64(1000) + "{}",
                "runs past the end of the file");
  expect_broken(dir, "length_huge.safetensors", le64(~std::uint64_t{0}) + "{}",
                "exceeds the limit");
  expect_broken(dir, "length_zero.safetensors", le64(0) + "{}", "too small");
  expect_broken(dir, "not_json.safetensors", file_with("{\"a\": nope}", 0),
                "header is not valid JSON");
  expect_broken(dir, "bad_utf8.safetensors", file_with("{\"\xff\xfe\":{}}", 0),
                "header is not valid JSON");
  expect_broken(dir, "json_array.safetensors", file_with("[1, 2]", 0), "expected a JSON object");
  expect_broken(dir, "json_number.safetensors", file_with("42", 0), "expected a JSON object");
  expect_broken(dir, "unknown_dtype.safetensors",
                file_with("{" + entry("w", "Q4", "[2]", "[0,2]") + "}", 2),
                "dtype 'Q4' is not supported");
  expect_broken(dir, "f64_dtype.safetensors",
                file_with("{" + entry("w", "F64", "[1]", "[0,8]") + "}", 8),
                "tensor 'w': dtype 'F64' is not supported by fragile");
  expect_broken(dir, "numeric_dtype.safetensors",
                file_with(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
                "'dtype' is the integer 4, expected a string");
  expect_broken(dir, "size_mismatch.safetensors",
                file_with("{" + entry("w", "F32", "[2]", "[0,6]") + "}", 6),
                "tensor 'w': F32 [2] needs 8 bytes, data_offsets [0, 6] hold 6");
  expect_broken(dir, "offsets_beyond.safetensors",
                file_with("{" + entry("w", "F32", "[2]", "[4,12]") + "}", 8),
                "data_offsets [4, 12] end beyond the data section (8 bytes)");
  expect_broken(dir, "offsets_reversed.safetensors",
                file_with("{" + entry("w", "U8", "[0]", "[4,0]") + "}", 8),
                "end before they begin");
  expect_broken(dir, "overlap.safetensors",
                file_with("{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                              entry("b", "F32", "[2]", "[4,12]") + "}",
                          12),
                "overlaps tensor 'a'");
  expect_broken(dir, "empty_inside.safetensors",
                file_with("{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                              entry("e", "F32", "[0]", "[4,4]") + "}",
                          8),
                "tensor 'e' (data_offsets [4, 4]) overlaps");
  expect_broken(dir, "hole.safetensors",
                file_with("{" + entry("a", "F32", "[1]", "[0,4]") + "," +
                              entry("b", "F32", "[1]", "[8,12]") + "}",
                          12),
                "hole in the data section: bytes [4, 8)");
  expect_broken(dir, "leading_hole.safetensors",
                file_with("{" + entry("a", "F32", "[1]", "[4,8]") + "}", 8),
                "hole in the data section: bytes [0, 4)");
  expect_broken(dir, "trailing_bytes.safetensors",
                file_with("{" + entry("a", "F32", "[1]", "[0,4]") + "}", 9),
                "bytes [4, 9) after the last tensor");
  expect_broken(dir, "negative_shape.safetensors",
                file_with("{" + entry("w", "U8", "[2,-1]", "[0,0]") + "}", 0),
                "shape entry 1 is the integer -1, expected a non-negative integer");
  expect_broken(dir, "fractional_shape.safetensors",
                file_with("{" + entry("w", "U8", "[2.5]", "[0,2]") + "}", 2),
                "shape entry 0 is the number 2.5, expected a non-negative integer");
  expect_broken(dir, "string_shape.safetensors",
                file_with("{" + entry("w", "U8", "\"2\"", "[0,2]") + "}", 2),
                "'shape' is a JSON string, expected an array");
  expect_broken(dir, "overflow_shape.safetensors",
                file_with("{" + entry("w", "F32", "[4294967296,4294967296]", "[0,0]") + "}", 0),
                "overflows");
  expect_broken(dir, "missing_shape.safetensors",
                file_with(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4),
                "tensor 'w': missing field 'shape'");
  expect_broken(dir, "missing_offsets.safetensors",
                file_with(R"({"w":{"dtype":"F32","shape":[1]}})", 4),
                "missing field 'data_offsets'");
  expect_broken(dir, "three_offsets.safetensors",
                file_with("{" + entry("w", "F32", "[1]", "[0,4,8]") + "}", 4),
                "expected an array [begin, end]");
  expect_broken(dir, "negative_offset.safetensors",
                file_with("{" + entry("w", "F32", "[1]", "[-4,0]") + "}", 4),
                "data_offsets[0] is the integer -4");
  expect_broken(dir, "entry_not_object.safetensors", file_with(R"({"w":[1,2]})", 0),
                "tensor 'w': header entry is a JSON array, expected an object");
  expect_broken(dir, "metadata_not_strings.safetensors",
                file_with(R"({"__metadata__":{"format":"pt","n":3}})", 0),
                "must map strings to strings");
  expect_broken(dir, "metadata_not_object.safetensors", file_with(R"({"__metadata__":"pt"})", 0),
                "expected a string map");
}

TEST_CASE("broken sharded checkpoints raise IoError with the documented message",
          "[io][safetensors][broken]") {
  const auto dir = fragile::test::scratch_dir("broken_shards");
  write_bytes(dir / "s1.safetensors", valid_file());  // a, b
  write_bytes(dir / "s2.safetensors", file_with("{" + entry("c", "U8", "[4]", "[0,4]") + "}", 4));

  auto index = [&](const std::string& name, const std::string& text) {
    write_bytes(dir / name, text);
    return dir / name;
  };
  auto check = [&](const fs::path& p, const std::string& phrase) {
    INFO("index " << p.filename() << ", expecting '" << phrase << "'");
    CHECK_THROWS_AS(open_safetensors(p), IoError);
    CHECK_THROWS_WITH(open_safetensors(p), Contains(phrase) && Contains(p.filename().string()));
  };

  const auto good = index("good.safetensors.index.json",
                          R"({"metadata":{"total_size":18},"weight_map":{"a":"s1.safetensors",)"
                          R"("b":"s1.safetensors","c":"s2.safetensors"}})");
  REQUIRE(open_safetensors(good).size() == 3);

  check(index("missing_shard.index.json",
              R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s9.safetensors"}})"),
        "shard '" + (dir / "s9.safetensors").string() +
            "' named in the index (for tensor 'c') is missing");
  check(index("absent_tensor.index.json",
              R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","z":"s1.safetensors",)"
              R"("c":"s2.safetensors"}})"),
        "the index names tensor 'z' in shard 's1.safetensors', which does not hold it");
  check(index("unlisted_tensor.index.json",
              R"({"weight_map":{"a":"s1.safetensors","c":"s2.safetensors"}})"),
        "tensor 'b' in shard 's1.safetensors' is not listed in the index");
  check(index("wrong_shard.index.json",
              R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}})"),
        "tensor 'b' is in shard 's1.safetensors' but the index names shard 's2.safetensors'");
  check(index("invalid.index.json", R"({"weight_map":{"a":"s1.safetensors",}})"),
        "index is not valid JSON");
  check(index("array.index.json", "[]"), "index is a JSON array, expected a JSON object");
  check(index("no_map.index.json", R"({"metadata":{}})"), "index has no 'weight_map'");
  check(index("map_not_object.index.json", R"({"weight_map":["s1.safetensors"]})"),
        "'weight_map' is a JSON array, expected an object");
  check(index("shard_not_string.index.json", R"({"weight_map":{"a":1}})"),
        "weight_map entry 'a' is the integer 1, expected a file name");
  check(index("escape.index.json", R"({"weight_map":{"a":"../s1.safetensors"}})"),
        "expected a file name relative to the index's folder");
  check(index("absolute.index.json", R"({"weight_map":{"a":"/etc/passwd"}})"),
        "expected a file name relative to the index's folder");

  // A broken shard is reported with the shard's own name.
  write_bytes(dir / "s3.safetensors", le64(500) + "{}");
  check(index("broken_shard.index.json", R"({"weight_map":{"x":"s3.safetensors"}})"),
        "s3.safetensors: header length 500 runs past the end of the file");

  // Paths that are not checkpoints at all.
  CHECK_THROWS_WITH(open_safetensors(dir / "nothing_here"), Contains("does not exist"));
  const auto empty_dir = fragile::test::scratch_dir("broken_shards_empty");
  CHECK_THROWS_WITH(open_safetensors(empty_dir),
                    Contains("holds no model.safetensors.index.json or model.safetensors"));
  write_bytes(empty_dir / "x.safetensors.index.json", "{}");
  write_bytes(empty_dir / "y.safetensors.index.json", "{}");
  CHECK_THROWS_WITH(open_safetensors(empty_dir), Contains("cannot tell which to open"));
}

TEST_CASE("a folder prefers model.safetensors.index.json over model.safetensors",
          "[io][safetensors]") {
  const auto dir = fragile::test::scratch_dir("prefer_index");
  fragile::io::SafetensorsWriter w;
  const std::vector<float> v = {1.0f, 2.0f};
  w.add("single", DType::kF32, {2}, v);
  w.write(dir / "model.safetensors");
  write_bytes(dir / "shard.safetensors",
              file_with("{" + entry("c", "U8", "[4]", "[0,4]") + "}", 4));
  write_bytes(dir / "model.safetensors.index.json", R"({"weight_map":{"c":"shard.safetensors"}})");
  CHECK(open_safetensors(dir).names() == std::vector<std::string>{"c"});
  fs::remove(dir / "model.safetensors.index.json");
  CHECK(open_safetensors(dir).names() == std::vector<std::string>{"single"});
}

TEST_CASE("A FIFO or a directory given as an input file is refused, never waited on") {
  const auto dir = fragile::test::scratch_dir("broken_fifo");
  const auto fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Each of these used to block in open() until a writer appeared.
  CHECK_THROWS_WITH(fragile::io::read_text_file(fifo), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(fragile::io::load_tokenizer(fifo), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(fragile::io::load_model(fifo), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(fragile::MappedFile(fifo), Catch::Contains("not a regular file"));
  CHECK_THROWS_WITH(fragile::io::read_text_file(dir), Catch::Contains("not a regular file"));
}
