// The report as a list of sections (text, bullet lists, tables, links, figures), rendered once as
// Markdown (summary.md) and once as a static HTML page (index.html), so the two always show
// the same content. The HTML page is self-contained: inline CSS, no JavaScript, no external
// resources; figures are <img> elements with paths relative to the page.
#pragma once

#include "fragile/study/table.hpp"

#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

namespace fragile::study {

struct PageFigure {
  std::string src;      ///< relative path, e.g. "plots/fragility_heatmap.svg"
  std::string caption;  ///< alt text and caption
  int width = 720, height = 480;
};

struct PageSection {
  std::string id;       ///< HTML anchor
  std::string heading;
  std::vector<std::string> paragraphs;
  std::vector<std::string> items;  ///< a bullet list
  std::vector<TextTable> tables;
  std::vector<PageFigure> figures;
  std::vector<std::pair<std::string, std::string>> links;  ///< (relative href, text)
};

inline PageSection page_section(std::string id, std::string heading) {
  PageSection s;
  s.id = std::move(id);
  s.heading = std::move(heading);
  return s;
}

struct Page {
  std::string title;
  std::vector<PageSection> sections;
};

inline std::string to_markdown(const Page& page) {
  // fmt::format rather than "literal" + string: GCC 12 reports a false -Wrestrict on the latter.
  std::string out = fmt::format("# {}\n", markdown_escape(page.title));
  for (const auto& s : page.sections) {
    out += fmt::format("\n## {}\n", markdown_escape(s.heading));
    for (const auto& p : s.paragraphs) out += fmt::format("\n{}\n", markdown_escape(p));
    if (!s.items.empty()) out += '\n';
    for (const auto& i : s.items) out += fmt::format("- {}\n", markdown_escape(i));
    for (const auto& t : s.tables) out += fmt::format("\n{}", to_markdown(t));
    if (!s.links.empty()) out += '\n';
    for (const auto& [href, text] : s.links)
      out += fmt::format("- [{}]({})\n", markdown_escape(text), href);
    for (const auto& f : s.figures)
      out += fmt::format("\n![{}]({})\n", markdown_escape(f.caption), f.src);
  }
  return out;
}

inline constexpr const char* kPageStyle = R"(body {
  font-family: sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222;
}
h1 { font-size: 1.6em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 1em 0; max-width: 580px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
nav a { margin-right: 1em; }
)";

inline std::string to_html(const Page& page) {
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<title>" + html_escape(page.title) + "</title>\n<style>\n" + kPageStyle +
         "</style>\n</head>\n<body>\n";
  out += "<h1>" + html_escape(page.title) + "</h1>\n<nav>";
  for (const auto& s : page.sections)
    out += "<a href=\"#" + html_escape(s.id) + "\">" + html_escape(s.heading) + "</a>";
  out += "</nav>\n";
  for (const auto& s : page.sections) {
    out += "<section id=\"" + html_escape(s.id) + "\">\n<h2>" + html_escape(s.heading) + "</h2>\n";
    for (const auto& p : s.paragraphs) out += "<p>" + html_escape(p) + "</p>\n";
    if (!s.items.empty()) {
      out += "<ul>\n";
      for (const auto& i : s.items) out += "<li>" + html_escape(i) + "</li>\n";
      out += "</ul>\n";
    }
    for (const auto& t : s.tables) out += to_html(t);
    if (!s.links.empty()) {
      out += "<ul>\n";
      for (const auto& [href, text] : s.links)
        out += "<li><a href=\"" + html_escape(href) + "\">" + html_escape(text) + "</a></li>\n";
      out += "</ul>\n";
    }
    if (!s.figures.empty()) out += "<div class=\"figures\">\n";
    for (const auto& f : s.figures)
      out += fmt::format("<figure><img src=\"{0}\" alt=\"{1}\" width=\"{2}\" height=\"{3}\">"
                         "<figcaption>{1}</figcaption></figure>\n",
                         html_escape(f.src), html_escape(f.caption), f.width, f.height);
    if (!s.figures.empty()) out += "</div>\n";
    out += "</section>\n";
  }
  return out + "</body>\n</html>\n";
}

}  // namespace fragile::study
