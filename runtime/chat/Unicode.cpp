#include "runtime/chat/Unicode.h"

#include "runtime/tokenizer/Utf8.h"

#include <utf8proc.h>

namespace moe::chat {

std::vector<char32_t> codePoints(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  const auto *bytes = reinterpret_cast<const utf8proc_uint8_t *>(text.data());
  for (size_t at = 0; at < text.size();) {
    utf8proc_int32_t codePoint;
    utf8proc_ssize_t length = utf8proc_iterate(
        bytes + at, utf8proc_ssize_t(text.size() - at), &codePoint);
    if (length <= 0) {
      out.push_back(U'\uFFFD');
      ++at;
    } else {
      out.push_back(char32_t(codePoint));
      at += size_t(length);
    }
  }
  return out;
}

void appendUtf8(std::string &out, char32_t codePoint) {
  utf8proc_uint8_t buffer[4];
  utf8proc_ssize_t length =
      utf8proc_encode_char(utf8proc_int32_t(codePoint), buffer);
  out.append(reinterpret_cast<const char *>(buffer), size_t(length));
}

std::string toUtf8(const std::vector<char32_t> &codePoints) {
  std::string out;
  out.reserve(codePoints.size());
  for (char32_t c : codePoints)
    appendUtf8(out, c);
  return out;
}

bool isPythonSpace(char32_t c) {
  return tokenizer::isWhiteSpace(c) || (c >= 0x1C && c <= 0x1F);
}

bool isJsSpace(char32_t c) {
  return (tokenizer::isWhiteSpace(c) && c != 0x85) || c == 0xFEFF;
}

std::string stripped(std::string_view text, bool left, bool right,
                     const std::u32string *chars) {
  std::vector<char32_t> points = codePoints(text);
  auto strip = [&](char32_t c) {
    return chars ? chars->find(c) != std::u32string::npos : isPythonSpace(c);
  };
  size_t begin = 0, end = points.size();
  while (left && begin < end && strip(points[begin]))
    ++begin;
  while (right && end > begin && strip(points[end - 1]))
    --end;
  return toUtf8({points.begin() + long(begin), points.begin() + long(end)});
}

std::string jsTrimmedEnd(std::string_view text) {
  std::vector<char32_t> points = codePoints(text);
  while (!points.empty() && isJsSpace(points.back()))
    points.pop_back();
  return toUtf8(points);
}

namespace {

std::string mapped(std::string_view text,
                   utf8proc_int32_t (*map)(utf8proc_int32_t)) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : codePoints(text))
    appendUtf8(out, char32_t(map(utf8proc_int32_t(c))));
  return out;
}

bool isCased(char32_t c) {
  utf8proc_category_t category = utf8proc_category(utf8proc_int32_t(c));
  return category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL ||
         category == UTF8PROC_CATEGORY_LT;
}

// Each character upper case where `upperHere(first, previousCased)` says
// so, lower case elsewhere.
std::string recased(std::string_view text, bool (*upperHere)(bool, bool)) {
  std::string out;
  bool first = true, previousCased = false;
  for (char32_t c : codePoints(text)) {
    utf8proc_int32_t point = utf8proc_int32_t(c);
    appendUtf8(out, char32_t(upperHere(first, previousCased)
                                 ? utf8proc_toupper(point)
                                 : utf8proc_tolower(point)));
    first = false;
    previousCased = isCased(c);
  }
  return out;
}

} // namespace

std::string upper(std::string_view text) {
  return mapped(text, utf8proc_toupper);
}

std::string lower(std::string_view text) {
  return mapped(text, utf8proc_tolower);
}

std::string title(std::string_view text) {
  return recased(text, [](bool, bool previousCased) { return !previousCased; });
}

std::string capitalize(std::string_view text) {
  return recased(text, [](bool first, bool) { return first; });
}

} // namespace moe::chat
