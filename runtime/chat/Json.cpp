#include "runtime/chat/Json.h"

#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Unicode.h"

#include <fmt/format.h>

#include <algorithm>

namespace moe::chat {
namespace {

std::string quoted(const std::string &text, bool ensureAscii) {
  std::string out = "\"";
  for (char32_t c : codePoints(text)) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (c < 0x20 || (ensureAscii && c >= 0x7F && c < 0x10000)) {
        out += fmt::format("\\u{:04x}", uint32_t(c));
      } else if (ensureAscii && c >= 0x10000) {
        // UTF-16 surrogate pairs, as json.dumps writes them.
        char32_t v = c - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10),
                           0xDC00 + (v & 0x3FF));
      } else {
        appendUtf8(out, c);
      }
    }
  }
  return out + "\"";
}

class Writer {
public:
  Writer(const JsonFormat &format, int line) : format_(format), line_(line) {
    bool indented = format.indent.has_value();
    itemSeparator_ = format.itemSeparator.value_or(indented ? "," : ", ");
    keySeparator_ = format.keySeparator.value_or(": ");
  }

  void write(const Value &value, int depth, std::string &out) const {
    using Kind = Value::Kind;
    switch (value.kind()) {
    case Kind::undefined:
    case Kind::none:
      out += "null";
      return;
    case Kind::boolean:
      out += value.asBool() ? "true" : "false";
      return;
    case Kind::integer:
    case Kind::floating:
      out += value.repr();
      return;
    case Kind::string:
      out += quoted(value.asString(), format_.ensureAscii);
      return;
    case Kind::list: {
      const List &list = value.asList();
      if (list.empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t i = 0; i < list.size(); ++i) {
        out += i ? itemSeparator_ : "";
        newline(depth + 1, out);
        write(list[i], depth + 1, out);
      }
      newline(depth, out);
      out += "]";
      return;
    }
    case Kind::dict:
    case Kind::nameSpace: {
      const Dict &dict = value.is(Kind::dict) ? value.asDict()
                                              : value.asNamespace().attributes;
      if (dict.size() == 0) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value> *> entries;
      for (const auto &entry : dict.entries())
        entries.push_back(&entry);
      if (format_.sortKeys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto *a, auto *b) { return a->first < b->first; });
      out += "{";
      for (size_t i = 0; i < entries.size(); ++i) {
        out += i ? itemSeparator_ : "";
        newline(depth + 1, out);
        out += quoted(entries[i]->first, format_.ensureAscii);
        out += keySeparator_;
        write(entries[i]->second, depth + 1, out);
      }
      newline(depth, out);
      out += "}";
      return;
    }
    case Kind::callable:
      fail(line_, "tojson cannot write a callable");
    }
  }

private:
  void newline(int depth, std::string &out) const {
    if (format_.indent)
      out += "\n" +
             std::string(size_t(std::max<int64_t>(0, *format_.indent) * depth),
                         ' ');
  }

  const JsonFormat &format_;
  int line_;
  std::string itemSeparator_, keySeparator_;
};

} // namespace

std::string toJson(const Value &value, const JsonFormat &format, int line) {
  std::string out;
  Writer(format, line).write(value, 0, out);
  return out;
}

} // namespace moe::chat
