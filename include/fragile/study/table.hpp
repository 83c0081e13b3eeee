// A table of text cells rendered three ways: CSV (RFC 4180), a GitHub-flavoured Markdown table
// and an HTML <table>. Cells hold plain text; each renderer does its own escaping, so text
// from a results file (a layer name, a configuration with '|' or '<') never breaks the markup.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::study {

struct TextTable {
  std::vector<std::string> header;
  std::vector<bool> numeric;  ///< per column: right-aligned (missing entries: left)
  std::vector<std::vector<std::string>> rows;

  [[nodiscard]] bool is_numeric(std::size_t col) const {
    return col < numeric.size() && numeric[col];
  }
};

/// &, <, >, " and ' as character references: safe in HTML text and attribute values.
inline std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

/// Markdown inline text, escaped just enough that text from a results file cannot start
/// markup or end a table cell: '\\', '`', '*', '~' and '|' always; '_' at a word boundary
/// (GFM never emphasises inside a word, so self_attn.q_proj and V_l stay readable); '<' before
/// what could open an HTML tag; ']' before what could make a link; '#' and '>' at the start.
/// Line breaks fold to spaces (a cell is one line).
inline std::string markdown_escape(std::string_view s) {
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const char prev = i ? s[i - 1] : ' ', next = i + 1 < s.size() ? s[i + 1] : ' ';
    if (c == '\n' || c == '\r') {
      out += ' ';
      continue;
    }
    const bool escape =
        std::string_view("\\`*~|").find(c) != std::string_view::npos ||
        (c == '_' && !(word(prev) && word(next))) ||
        (c == '<' && (word(next) || next == '/' || next == '!' || next == '?')) ||
        (c == ']' && (next == '(' || next == '[' || next == ':')) ||
        (i == 0 && (c == '#' || c == '>'));
    if (escape) out += '\\';
    out += c;
  }
  return out;
}

/// One CSV field: quoted (with "" for ") when it holds a comma, a quote or a line break.
inline std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

/// RFC 4180: CRLF line ends, a header line first.
inline std::string to_csv(const TextTable& t) {
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i) out += ',';
      out += csv_field(cells[i]);
    }
    out += "\r\n";
  };
  line(t.header);
  for (const auto& r : t.rows) line(r);
  return out;
}

inline std::string to_markdown(const TextTable& t) {
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    out += '|';
    for (const auto& c : cells) out += ' ' + markdown_escape(c) + " |";
    out += '\n';
  };
  line(t.header);
  out += '|';
  for (std::size_t i = 0; i < t.header.size(); ++i) out += t.is_numeric(i) ? "---:|" : "---|";
  out += '\n';
  for (const auto& r : t.rows) line(r);
  return out;
}

inline std::string to_html(const TextTable& t) {
  std::string out = "<table>\n<thead><tr>";
  for (std::size_t i = 0; i < t.header.size(); ++i)
    out += (t.is_numeric(i) ? "<th class=\"num\">" : "<th>") + html_escape(t.header[i]) + "</th>";
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& r : t.rows) {
    out += "<tr>";
    for (std::size_t i = 0; i < r.size(); ++i)
      out += (t.is_numeric(i) ? "<td class=\"num\">" : "<td>") + html_escape(r[i]) + "</td>";
    out += "</tr>\n";
  }
  return out + "</tbody>\n</table>\n";
}

}  // namespace fragile::study
