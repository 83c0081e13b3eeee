// Reader of llama.cpp's tokenizer test vectors: `.inp` holds each case followed by the line
// "__ggml_vocab_test__" (so every case ends with "\n__ggml_vocab_test__\n", and a case's own
// leading/trailing newlines are kept), `.out` holds one line of space-separated ids per case.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace fragile::test {

struct VocabCase {
  std::string text;
  std::vector<std::int32_t> ids;
};

inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::vector<VocabCase> read_vocab_cases(const std::filesystem::path& inp,
                                               const std::filesystem::path& out) {
  const std::string text = read_all(inp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<VocabCase> cases;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto at = text.find(sep, pos);
    if (at == std::string::npos) throw std::runtime_error(inp.string() + ": case without separator");
    cases.push_back({text.substr(pos, at - pos), {}});
    pos = at + sep.size();
  }
  std::ifstream o(out);
  std::string line;
  std::size_t i = 0;
  while (std::getline(o, line)) {
    if (i >= cases.size()) throw std::runtime_error(out.string() + ": more lines than cases");
    std::istringstream ls(line);
    std::int32_t id;
    while (ls >> id) cases[i].ids.push_back(id);
    ++i;
  }
  if (i != cases.size()) throw std::runtime_error(out.string() + ": fewer lines than cases");
  return cases;
}

}  // namespace fragile::test
