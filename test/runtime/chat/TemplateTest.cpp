// The Jinja library construct by construct: statements, expressions,
// filters, tests, methods, whitespace control, and the error each misuse
// gives (naming the line and the construct).
#include <gtest/gtest.h>

#include "runtime/chat/Template.h"

namespace {

using Json = nlohmann::ordered_json;

// The rendering of `source` with `variables`, or "error: " and its message.
std::string render(std::string_view source, const Json &variables = {}) {
  auto compiled = moe::chat::Template::parse(source, "t");
  if (!compiled.ok())
    return "error: " + compiled.error().message();
  auto text =
      compiled->render(variables.is_null() ? Json::object() : variables);
  return text.ok() ? *text : "error: " + text.error().message();
}

TEST(Template, TextAndOutput) {
  EXPECT_EQ(render("plain text"), "plain text");
  EXPECT_EQ(render("a{{ 1 + 2 }}b"), "a3b");
  EXPECT_EQ(render("{{ x }}", {{"x", "é😀"}}), "é😀");
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
  EXPECT_EQ(render("{# a comment #}x"), "x");
  // keep_trailing_newline is off, as in transformers.
  EXPECT_EQ(render("line\n"), "line");
}

TEST(Template, WhitespaceControl) {
  EXPECT_EQ(render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(render("a \n{%- if true %} b{% endif -%}\n c"), "a bc");
  // trim_blocks: the newline after a block tag goes.
  EXPECT_EQ(render("{% if true %}\nyes\n{% endif %}\nend"), "yes\nend");
  // lstrip_blocks: spaces before a block tag at a line's start go.
  EXPECT_EQ(render("x\n    {% if true %}y{% endif %}"), "x\ny");
  // ...but not before an expression.
  EXPECT_EQ(render("x\n  {{ 'y' }}"), "x\n  y");
  EXPECT_EQ(render("a {#- c -#} b"), "ab");
  // Training templates' generation markers render nothing.
  EXPECT_EQ(render("a{% generation %}b{% endgeneration %}c"), "abc");
}

TEST(Template, WhitespaceControlStopsAtAComment) {
  // A `-` strips the text between the comment and its tag, none here: the
  // text before the comment stays.
  EXPECT_EQ(render("a\n{# c #}{%- if true %}b{% endif %}"), "a\nb");
  EXPECT_EQ(render("a\n  {# c #}\n  {%- if true %}b{% endif %}"), "a\nb");
  EXPECT_EQ(render("a\n{# c #}{{- 'b' }}"), "a\nb");
  EXPECT_EQ(render("a {# x #}{#- y #}b"), "a b");
  EXPECT_EQ(render("a {# x #} {{- 'b' }}"), "a b");
}

TEST(Template, IfElifElse) {
  const char *source =
      "{% if n > 2 %}big{% elif n == 2 %}two{% else %}small{% endif %}";
  EXPECT_EQ(render(source, {{"n", 3}}), "big");
  EXPECT_EQ(render(source, {{"n", 2}}), "two");
  EXPECT_EQ(render(source, {{"n", 1}}), "small");
  EXPECT_EQ(
      render("{% if [] or {} or '' or 0 or none %}t{% else %}f{% endif %}"),
      "f");
}

TEST(Template, ForLoopVariables) {
  Json vars = {{"xs", {"a", "b", "c"}}};
  EXPECT_EQ(
      render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}"
             "{{ loop.revindex }}{{ loop.revindex0 }}{{ x }}"
             "{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}"
             "{{ loop.length }};{% endfor %}",
             vars),
      "1032aF3;2121b3;3210cL3;");
  EXPECT_EQ(render("{% for x in xs %}{{ loop.previtem }}>{{ loop.nextitem }} "
                   "{% endfor %}",
                   vars),
            ">b a>c b> ");
}

TEST(Template, ForLoopElseFilterBreakContinue) {
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}"
                   "{{ loop.length }}{% endfor %}"),
            "2242");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}"
                   "{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}"
                   "{% endfor %}"),
            "13");
  EXPECT_EQ(render("{% for k, v in d | items %}{{ k }}={{ v }},{% endfor %}",
                   {{"d", {{"b", 1}, {"a", 2}}}}),
            "b=1,a=2,");
  EXPECT_EQ(render("{% for k in d %}{{ k }}{% endfor %}",
                   {{"d", {{"z", 1}, {"y", 2}}}}),
            "zy");
  EXPECT_EQ(render("{% for x in xs | reverse %}{{ x }}{% endfor %}",
                   {{"xs", {1, 2}}}),
            "21");
}

TEST(Template, SetScopesAndNamespace) {
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(
      render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}"
             "{{ x }}"),
      "1");
  EXPECT_EQ(render("{% set ns = namespace(x=1) %}{% for i in [1, 2] %}"
                   "{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}"),
            "4");
  EXPECT_EQ(render("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]"),
            "[in side]");
}

TEST(Template, MacrosAndCallBlocks) {
  EXPECT_EQ(render("{% macro greet(name, greeting='Hi') %}{{ greeting }} "
                   "{{ name }}{% endmacro %}{{ greet('Ann') }}|"
                   "{{ greet('Bo', greeting='Yo') }}"),
            "Hi Ann|Yo Bo");
  EXPECT_EQ(render("{% macro wrap() %}<{{ caller() }}>{% endmacro %}"
                   "{% call wrap() %}body{% endcall %}"),
            "<body>");
  EXPECT_EQ(render("{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}"
                   "{% endfor %}{% endmacro %}{% call(item) each([1, 2]) %}"
                   "[{{ item }}]{% endcall %}"),
            "[1][2]");
  EXPECT_EQ(render("{% filter upper %}shout {{ 'this' }}{% endfilter %}"),
            "SHOUT THIS");
}

TEST(Template, Operators) {
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} "
                   "{{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 * 2 }}"),
            "3 -4 1 2 3.5 1024 3.0");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }} {{ 'ab' + 'cd' }} {{ [1] + [2] }}"),
            "a1None abcd [1, 2]");
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in d }} "
                   "{{ 'z' not in d }} {{ 1 in undefined_name }}",
                   {{"d", {{"k", 1}}}}),
            "True True True True False");
  EXPECT_EQ(
      render("{{ not true }} {{ 1 if false else 2 }} {{ -x }}", {{"x", 3}}),
      "False 2 -3");
  EXPECT_EQ(render("{{ [1, 2] == [1, 2] }} {{ {'a': 1} == {'a': 1} }} "
                   "{{ 1 == 1.0 }}"),
            "True True True");
  EXPECT_EQ(render("{{ 'x' and 'y' }} {{ '' or 'z' }}"), "y z");
}

TEST(Template, SubscriptsAndSlices) {
  Json vars = {{"xs", {1, 2, 3, 4}}, {"s", "héllo"}, {"m", {{"role", "user"}}}};
  EXPECT_EQ(render("{{ xs[0] }}{{ xs[-1] }}{{ xs[1:3] }}{{ xs[::-1] }}"
                   "{{ xs[::2] }}{{ xs[-2:] }}",
                   vars),
            "14[2, 3][4, 3, 2, 1][1, 3][3, 4]");
  EXPECT_EQ(render("{{ s[1] }}{{ s[1:3] }}{{ s[::-1] }}", vars), "éélolléh");
  EXPECT_EQ(render("{{ m.role }}{{ m['role'] }}[{{ m.missing }}]", vars),
            "useruser[]");
  EXPECT_EQ(render("{{ xs[10] is defined }}", vars), "False");
}

TEST(Template, Literals) {
  EXPECT_EQ(render("{{ 'it\\'s' }} {{ \"tab\\there\" }} {{ '\\u00e9' }}"),
            "it's tab\there é");
  EXPECT_EQ(render("{{ 'a' 'b' }}"), "ab");
  EXPECT_EQ(render("{{ {'k': [1, 'two', none, true, 1.5]} }}"),
            "{'k': [1, 'two', None, True, 1.5]}");
  EXPECT_EQ(
      render("{{ 0.1 }} {{ 1.0 }} {{ 100000000000000000.0 }} {{ -0.00001 }}"),
      "0.1 1.0 1e+17 -1e-05");
}

TEST(Template, StringMethods) {
  Json vars = {{"s", "  Hello World  "}};
  EXPECT_EQ(
      render("[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}]", vars),
      "[Hello World][Hello World  ][  Hello World]");
  EXPECT_EQ(render("{{ '\\nx \\n'.strip('\\n') }}|"), "x |");
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} "
                   "{{ 'a b c'.split(' ', 1) }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c']");
  EXPECT_EQ(
      render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }}"),
      "True True");
  EXPECT_EQ(render("{{ 'aaa'.replace('a', 'b', 2) }} {{ 'Ab'.upper() }} "
                   "{{ 'Ab'.lower() }} {{ 'hello wORLD'.title() }} "
                   "{{ 'éa'.capitalize() }}"),
            "bba AB ab Hello World Éa");
  EXPECT_EQ(render("{{ '-'.join(['a', 'b']) }}"), "a-b");
}

TEST(Template, DictMethods) {
  Json vars = {{"d", {{"a", 1}, {"b", 2}}}};
  EXPECT_EQ(render("{{ d.get('a') }} {{ d.get('z', 0) }} {{ d.get('z') }} "
                   "{{ d.keys() }} {{ d.values() }} {{ d.items() }}",
                   vars),
            "1 0 None ['a', 'b'] [1, 2] [['a', 1], ['b', 2]]");
}

TEST(Template, Filters) {
  Json vars = {{"xs", {"b", "A", "c"}},
               {"ms",
                {{{"role", "user"}, {"n", 1}},
                 {{"role", "tool"}, {"n", 2}},
                 {{"role", "user"}}}}};
  EXPECT_EQ(render("{{ xs | length }} {{ xs | first }} {{ xs | last }} "
                   "{{ xs | join(', ') }} {{ xs | sort }} {{ 'ab' | list }}",
                   vars),
            "3 b c b, A, c ['A', 'b', 'c'] ['a', 'b']");
  EXPECT_EQ(render("{{ ms | selectattr('role', 'equalto', 'user') | list | "
                   "length }} {{ ms | rejectattr('role', 'equalto', 'user') | "
                   "map(attribute='n') | list }} {{ ms | selectattr('n', "
                   "'undefined') | length }}",
                   vars),
            "2 [2] 1");
  EXPECT_EQ(render("{{ ms | map(attribute='n', default=0) | list }} "
                   "{{ xs | map('upper') | join }}",
                   vars),
            "[1, 2, 0] BAC");
  EXPECT_EQ(
      render("[{{ '  x ' | trim }}] {{ 'ab' | upper }} {{ 'AB' | lower }} "
             "{{ 'ab cd' | title }} {{ 'aB' | capitalize }} "
             "{{ 'a-b' | replace('-', '+') }} {{ 12 | string }}"),
      "[x] AB ab Ab Cd Ab a+b 12");
  EXPECT_EQ(render("{{ missing | default('d') }} {{ '' | default('e', true) }} "
                   "{{ 'x' | default('f') }} {{ none | d('g') }}"),
            "d e x None");
  EXPECT_EQ(render("{{ '42' | int }} {{ '4.7' | int }} {{ 'x' | int(7) }} "
                   "{{ 3.9 | int }} {{ '2.5' | float }} {{ -3 | abs }} "
                   "{{ 'x' | safe }}"),
            "42 4 7 3 2.5 3 x");
  EXPECT_EQ(render("{{ [1, 2, 1] | unique | list }} {{ {'b': 1, 'a': 2} | "
                   "dictsort }} {{ [3, 1] | sort(reverse=true) }}"),
            "[1, 2] [['a', 2], ['b', 1]] [3, 1]");
  EXPECT_EQ(render("{{ 'a\\nb\\n\\nc' | indent(2) }}"), "a\n  b\n\n  c");
  EXPECT_EQ(render("{{ [0, 1, ''] | select | list }} {{ [1, 2, 3] | "
                   "reject('odd') | list }}"),
            "[1] [2]");
}

TEST(Template, ToJson) {
  Json vars = {
      {"v",
       Json::parse(R"({"b": "é\"\n", "a": [1, 2.5, true, null], "e": {}})")}};
  EXPECT_EQ(render("{{ v | tojson }}", vars),
            R"({"b": "é\"\n", "a": [1, 2.5, true, null], "e": {}})");
  EXPECT_EQ(render("{{ v | tojson(indent=2) }}", vars),
            "{\n  \"b\": \"é\\\"\\n\",\n  \"a\": [\n    1,\n    2.5,\n    "
            "true,\n    null\n  ],\n  \"e\": {}\n}");
  EXPECT_EQ(render("{{ v | tojson(ensure_ascii=true, sort_keys=true) }}", vars),
            R"({"a": [1, 2.5, true, null], "b": "\u00e9\"\n", "e": {}})");
  EXPECT_EQ(render("{{ v.a | tojson(separators=(',', ':')) }} {{ '😀' | "
                   "tojson(ensure_ascii=true) }}",
                   vars),
            R"([1,2.5,true,null] "\ud83d\ude00")");
}

TEST(Template, Tests) {
  Json vars = {{"s", "x"},
               {"n", nullptr},
               {"d", Json::object()},
               {"l", Json::array()},
               {"i", 3}};
  EXPECT_EQ(render("{{ s is string }}{{ s is defined }}{{ z is undefined }}"
                   "{{ n is none }}{{ d is mapping }}{{ l is iterable }}"
                   "{{ s is iterable }}{{ i is number }}{{ i is integer }}"
                   "{{ i is odd }}{{ i is even }}{{ i is divisibleby(3) }}"
                   "{{ true is boolean }}{{ s is lower }}{{ 'X' is upper }}"
                   "{{ i is equalto(3) }}{{ s is not none }}",
                   vars),
            "TrueTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrue"
            "True");
}

TEST(Template, UndefinedIsAnEmptySequence) {
  // As Python's Jinja: Hermes' template types a schema without a "type"
  // as "Union[]" by looping over the undefined type.
  EXPECT_EQ(render("{{ x is iterable }}{{ x.y is sequence }}"), "TrueTrue");
  EXPECT_EQ(render("{% if s.type is iterable %}Union[{% for t in s.type %}"
                   "{{ t }}{% endfor %}]{% endif %}",
                   {{"s", Json::object()}}),
            "Union[]");
}

TEST(Template, StringFiltersTakeUndefinedAsEmpty) {
  EXPECT_EQ(render("[{{ s.type | upper }}|{{ x | trim }}|{{ x | lower }}|"
                   "{{ x | title }}|{{ x | capitalize }}|"
                   "{{ x | replace('a', 'b') }}]",
                   {{"s", Json::object()}}),
            "[|||||]");
  EXPECT_EQ(render("{% if s.type | upper == 'STRING' %}s{% else %}other"
                   "{% endif %}",
                   {{"s", Json::object()}}),
            "other");
  // indent adds to its text, which Python's Jinja refuses on undefined.
  EXPECT_EQ(render("{{ x | indent }}"),
            "error: t line 1: filter 'indent' does not apply to undefined");
}

TEST(Template, MinMaxFilters) {
  EXPECT_EQ(render("{{ [3, 1, 2] | min }} {{ [3, 1, 2] | max }} "
                   "{{ ['b', 'a', 'C'] | max }} "
                   "{{ ['b', 'a', 'C'] | max(case_sensitive=true) }} "
                   "[{{ [] | max }}]"),
            "1 3 C b []");
  EXPECT_EQ(render("{{ (xs | max(attribute='n')).id }}",
                   {{"xs", Json::parse(R"([{"id": "a", "n": 2},
                                           {"id": "b", "n": 5},
                                           {"id": "c", "n": 5}])")}}),
            "b");
}

TEST(Template, InTest) {
  // Qwen3-Coder's template drops the keys it renders itself.
  EXPECT_EQ(render("{{ ['name', 'type', 'enum'] | reject('in', ['name', "
                   "'type']) | list }} {{ 'a' is in('cat') }} "
                   "{{ 'k' is in({'k': 1}) }} {{ 2 is in([1, 3]) }}"),
            "['enum'] True True False");
}

TEST(Template, Globals) {
  EXPECT_EQ(render("{{ range(3) }} {{ range(1, 7, 2) }} {{ range(3, 0, -1) }}"),
            "[0, 1, 2] [1, 3, 5] [3, 2, 1]");
  std::string year = render("{{ strftime_now('%Y') }}");
  EXPECT_EQ(year.size(), 4u);
  EXPECT_TRUE(std::all_of(year.begin(), year.end(), ::isdigit)) << year;
  EXPECT_EQ(render("{{ True }}{{ False }}{{ None }}"), "TrueFalseNone");
}

TEST(Template, DictMethodsBeforeKeysForDotKeysBeforeMethodsForSubscript) {
  // A JSON schema of an array has an "items" key: `.items()` is still the
  // method, `['items']` the key.
  Json vars = {
      {"schema", {{"type", "array"}, {"items", {{"type", "string"}}}}}};
  EXPECT_EQ(
      render("{% for k, v in schema.items() %}{{ k }};{% endfor %}", vars),
      "type;items;");
  EXPECT_EQ(render("{{ schema['items'].type }} {{ schema.type }}", vars),
            "string array");
  EXPECT_EQ(render("{{ d.get('get') }} {{ d['get'] }}", {{"d", {{"get", 1}}}}),
            "1 1");
  EXPECT_EQ(render("{{ d.get is callable }}", {{"d", {{"get", 1}}}}), "True");
}

TEST(TemplateErrors, UnsupportedConstructsNameTheLine) {
  EXPECT_EQ(render("ok\n{% while x %}"),
            "error: t line 2: statement 'while' is not supported");
  EXPECT_EQ(render("{{ x | wordwrap }}"),
            "error: t line 1: filter 'wordwrap' is not supported");
  EXPECT_EQ(render("\n\n{{ x is sameish }}"),
            "error: t line 3: test 'sameish' is not supported");
  EXPECT_EQ(render("{{ f(*args) }}"),
            "error: t line 1: argument unpacking (*args, **kwargs) is not "
            "supported");
  EXPECT_EQ(render("{% for x in xs recursive %}{% endfor %}"),
            "error: t line 1: recursive for loops are not supported");
  EXPECT_EQ(render("{{ 'a'.zfill(3) }}"),
            "error: t line 1: method 'zfill' of a string is not supported");
}

TEST(TemplateErrors, LoadingAnotherTemplateNamesTheLine) {
  // Refused when the template is read, even where no rendering reaches.
  const char *kError =
      "' is not supported: a chat template is one file and cannot include, "
      "import or extend another";
  EXPECT_EQ(render("ok\n{% include 'other.jinja' %}"),
            std::string("error: t line 2: 'include") + kError);
  EXPECT_EQ(render("{% if false %}\n\n{% import 'macros' as m %}{% endif %}"),
            std::string("error: t line 3: 'import") + kError);
  EXPECT_EQ(render("a\n{%- from 'macros' import render -%}"),
            std::string("error: t line 2: 'from") + kError);
  EXPECT_EQ(render("{% extends 'base.jinja' %}"),
            std::string("error: t line 1: 'extends") + kError);
}

TEST(TemplateErrors, MalformedTemplates) {
  EXPECT_EQ(render("{% if x %}\nopen"),
            "error: t line 1: 'if' block without its 'endif'");
  EXPECT_EQ(render("{{ 'open }}"),
            "error: t line 1: string literal without its closing quote");
  EXPECT_EQ(render("{# open"),
            "error: t line 1: comment {# without its closing #}");
  EXPECT_EQ(render("{{ 1 + }}"),
            "error: t line 1: unexpected '}}' in an expression");
  EXPECT_EQ(render("{{ x ? y }}"), "error: t line 1: unexpected character '?'");
  EXPECT_EQ(render("{% for 1 in x %}{% endfor %}"),
            "error: t line 1: a for loop's target must be a name or names");
  EXPECT_EQ(render("{{ '\\q' }}"),
            "error: t line 1: unknown escape \\q in a string literal");
  EXPECT_EQ(render("{{ " + std::string(1000, '(') + "1" +
                   std::string(1000, ')') + " }}"),
            "error: t line 1: nested deeper than 200 levels");
  std::string deep;
  for (int i = 0; i < 300; ++i)
    deep += "{% if true %}";
  EXPECT_EQ(render(deep), "error: t line 1: nested deeper than 200 levels");
}

TEST(TemplateErrors, RenderingErrorsNameTheLine) {
  EXPECT_EQ(render("a\n{{ raise_exception('bad roles') }}"),
            "error: t line 2: the template raised an error: bad roles");
  EXPECT_EQ(render("{{ m.content + 'x' }}", {{"m", Json::object()}}),
            "error: t line 1: 'm.content' is undefined");
  EXPECT_EQ(render("{{ 'a' + none }}"),
            "error: t line 1: '+' does not apply to a string and none");
  EXPECT_EQ(render("{% set s = 'x' %}{% set s.a = 1 %}"),
            "error: t line 1: cannot set an attribute of 's' (a string): only "
            "namespace() objects take assignments");
  EXPECT_EQ(render("{{ 1 // 0 }}"), "error: t line 1: division by zero");
  EXPECT_EQ(render("{{ x() }}", {{"x", 1}}),
            "error: t line 1: 'x' is not callable (it is an integer)");
  EXPECT_EQ(render("{% for x in 3 %}{% endfor %}"),
            "error: t line 1: cannot loop over a value (an integer)");
  EXPECT_EQ(render("{{ 5 | upper }}"),
            "error: t line 1: filter 'upper' does not apply to an integer");
  EXPECT_EQ(render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
            "error: t line 1: macro 'f' nests deeper than 256 calls");
  EXPECT_EQ(render("{% set a, b = [1] %}"),
            "error: t line 1: cannot unpack 1 values into 2 names");
  EXPECT_EQ(render("{{ 99999999999999999999 }}"),
            "error: t line 1: integer 99999999999999999999 does not fit in 64 "
            "bits");
  EXPECT_EQ(render("{{ 9223372036854775807 + 1 }}"),
            "error: t line 1: integer overflow in 9223372036854775807 + 1");
  EXPECT_EQ(render("{{ 'ab' * 1000000000 }}"),
            "error: t line 1: '*' would make more than 268435456 items");
  EXPECT_EQ(render("{{ range(1000000000) | length }}"),
            "error: t line 1: range() of more than 268435456 items");
}

} // namespace
