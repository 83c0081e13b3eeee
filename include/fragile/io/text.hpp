// Evaluation and calibration text: strict UTF-8 files, WikiText-2 raw rows, TinyStories documents.
//
// WikiText-2 raw (wiki.test.raw, 4,358 lines): the Hugging Face `wikitext` dataset builder makes
// each line of the file one row (`for idx, row in enumerate(f)`), keeping the row's trailing
// "\n" and replacing rows that are only whitespace by "" (`row.strip()`); GPTQ's get_wikitext2
// and most perplexity scripts then tokenize "\n\n".join(rows). `read_wikitext_raw` returns
// exactly that string, so token counts match the Python protocol.
// TinyStories text files hold stories separated by lines `<|endoftext|>`; each story is returned
// stripped of surrounding whitespace (llama2.c's pretokenizer strips each story too).
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/io/utf8.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::io {

/// Throws IoError naming `source`, the byte offset and the byte value if `text` is not UTF-8.
inline void validate_utf8(std::string_view text, std::string_view source) {
  if (auto at = find_invalid_utf8(text))
    raise<IoError>("{}: invalid UTF-8 sequence at byte offset {} (byte 0x{:02X})", source, *at,
                   static_cast<unsigned>(static_cast<unsigned char>(text[*at])));
}

/// The whole file as a string; IoError if unreadable, empty or not valid UTF-8.
inline std::string read_text_file(const std::filesystem::path& path) {
  std::string text = read_input_file(path, "text file");
  require<IoError>(!text.empty(), "text file '{}' is empty", path.string());
  validate_utf8(text, path.string());
  return text;
}

/// Splits text into lines as Python's text-mode file iteration does (universal newlines:
/// "\r\n" and "\r" become "\n"); each line keeps its "\n", a last line without one is kept.
inline std::vector<std::string> python_lines(std::string_view text) {
  std::vector<std::string> lines;
  std::string line;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (ch == '\r' || ch == '\n') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      line.push_back('\n');
      lines.push_back(std::move(line));
      line.clear();
    } else {
      line.push_back(ch);
    }
  }
  if (!line.empty()) lines.push_back(std::move(line));
  return lines;
}

/// True if `s` holds only ASCII whitespace (Python's str.strip() would leave it empty).
inline bool is_blank(std::string_view s) noexcept {
  for (char ch : s)
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' && ch != '\v' && ch != '\f')
      return false;
  return true;
}

/// The rows of the Hugging Face `wikitext` dataset built from a raw file's text: one row per
/// line, with its "\n"; whitespace-only lines become "".
inline std::vector<std::string> wikitext_rows(std::string_view text) {
  auto rows = python_lines(text);
  for (auto& row : rows)
    if (is_blank(row)) row.clear();
  return rows;
}

/// rows[0] + sep + rows[1] + ... (Python's sep.join(rows)).
inline std::string join_rows(const std::vector<std::string>& rows, std::string_view sep = "\n\n") {
  std::size_t total = rows.empty() ? 0 : sep.size() * (rows.size() - 1);
  for (const auto& r : rows) total += r.size();
  std::string out;
  out.reserve(total);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i) out.append(sep);
    out.append(rows[i]);
  }
  return out;
}

/// A WikiText raw file (e.g. wiki.test.raw) as GPTQ tokenizes it: "\n\n".join(dataset rows).
inline std::string read_wikitext_raw(const std::filesystem::path& path) {
  return join_rows(wikitext_rows(read_text_file(path)), "\n\n");
}

/// Splits text at lines that equal `separator` (a trailing "\r" tolerated) into documents,
/// each stripped of leading/trailing ASCII whitespace; empty documents are dropped.
inline std::vector<std::string> split_documents(std::string_view text,
                                                std::string_view separator = "<|endoftext|>") {
  std::vector<std::string> docs;
  auto flush = [&](std::string_view doc) {
    std::size_t b = 0, e = doc.size();
    while (b < e && is_blank(doc.substr(b, 1))) ++b;
    while (e > b && is_blank(doc.substr(e - 1, 1))) --e;
    if (e > b) docs.emplace_back(doc.substr(b, e - b));
  };
  std::size_t doc_start = 0, pos = 0;
  while (pos <= text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == separator) {
      flush(text.substr(doc_start, pos - doc_start));
      doc_start = std::min(eol + 1, text.size());
    }
    if (eol == text.size()) break;
    pos = eol + 1;
  }
  flush(text.substr(doc_start));
  return docs;
}

/// A TinyStories text file (stories separated by `<|endoftext|>` lines) as its stories.
inline std::vector<std::string> read_tinystories(const std::filesystem::path& path) {
  auto docs = split_documents(read_text_file(path), "<|endoftext|>");
  require<IoError>(!docs.empty(), "text file '{}' holds no non-blank story", path.string());
  return docs;
}

}  // namespace fragile::io
