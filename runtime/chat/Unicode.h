// The text operations templates apply, on UTF-8 by code point: whitespace
// as Python's str methods and as the reference lexer (JavaScript's \s) see
// it, and case mapping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe::chat {

// The code points of `text`; ill-formed bytes read as U+FFFD.
std::vector<char32_t> codePoints(std::string_view text);
std::string toUtf8(const std::vector<char32_t> &codePoints);
void appendUtf8(std::string &out, char32_t codePoint);

// str.isspace() of one character.
bool isPythonSpace(char32_t c);
// JavaScript's /\s/, which the reference applies to whitespace control.
bool isJsSpace(char32_t c);

// str.strip/lstrip/rstrip: without `chars`, whitespace.
std::string stripped(std::string_view text, bool left, bool right,
                     const std::u32string *chars = nullptr);
// `text` without JavaScript whitespace at its end (the reference's `{%-`).
std::string jsTrimmedEnd(std::string_view text);

std::string upper(std::string_view text);
std::string lower(std::string_view text);
// str.title(): each run of letters starts upper case, the rest lower.
std::string title(std::string_view text);
// str.capitalize(): the first character upper case, the rest lower.
std::string capitalize(std::string_view text);

} // namespace moe::chat
