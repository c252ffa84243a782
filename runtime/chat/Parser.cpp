#include "runtime/chat/Parser.h"

#include "runtime/chat/Filters.h"
#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Tests.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>

namespace moe::chat {
namespace {

// Deeper than any real template; a template nested deeper fails with an
// error instead of overflowing the stack.
constexpr int kMaxNesting = 200;

class Parser {
public:
  explicit Parser(const std::vector<Token> &tokens) : tokens_(tokens) {}

  std::vector<Stmt> run() {
    std::vector<Stmt> body;
    while (at_ < tokens_.size())
      body.push_back(statement());
    return body;
  }

private:
  // ---- tokens

  const Token *peek(size_t ahead = 0) const {
    return at_ + ahead < tokens_.size() ? &tokens_[at_ + ahead] : nullptr;
  }
  int line() const {
    if (const Token *token = peek())
      return token->line;
    return tokens_.empty() ? 1 : tokens_.back().line;
  }
  bool isSymbol(std::string_view text, size_t ahead = 0) const {
    const Token *token = peek(ahead);
    return token && token->kind == TokenKind::symbol && token->text == text;
  }
  bool isWord(std::string_view text, size_t ahead = 0) const {
    const Token *token = peek(ahead);
    return token && token->kind == TokenKind::identifier && token->text == text;
  }
  bool isKind(TokenKind kind) const { return peek() && peek()->kind == kind; }
  [[noreturn]] void unexpected(std::string_view expected) const {
    const Token *token = peek();
    fail(line(),
         token ? fmt::format("expected {}, found '{}'", expected, token->text)
               : fmt::format("expected {}, found the end of the "
                             "template",
                             expected));
  }
  const Token &take() {
    if (!peek())
      unexpected("more");
    return tokens_[at_++];
  }
  void expectSymbol(std::string_view text) {
    if (!isSymbol(text))
      unexpected(fmt::format("'{}'", text));
    ++at_;
  }
  void expectKind(TokenKind kind, std::string_view shown) {
    if (!isKind(kind))
      unexpected(shown);
    ++at_;
  }
  std::string identifier(std::string_view what) {
    if (!isKind(TokenKind::identifier))
      unexpected(what);
    return tokens_[at_++].text;
  }

  // One level of nesting (a block, a parenthesis, an operator's operand)
  // while it lives.
  class Nested {
  public:
    Nested(Parser &parser) : parser_(parser) {
      if (++parser_.depth_ > kMaxNesting)
        fail(parser_.line(),
             fmt::format("nested deeper than {} levels", kMaxNesting));
    }
    ~Nested() { --parser_.depth_; }

  private:
    Parser &parser_;
  };

  // ---- statements

  Stmt statement() {
    const Token &token = take();
    switch (token.kind) {
    case TokenKind::text:
      return Stmt{
          .kind = Stmt::Kind::text, .line = token.line, .text = token.text};
    case TokenKind::openExpression: {
      Stmt output{.kind = Stmt::Kind::output, .line = token.line};
      output.value = expression();
      expectKind(TokenKind::closeExpression, "'}}'");
      return output;
    }
    case TokenKind::openStatement:
      return block();
    default:
      fail(token.line,
           fmt::format("unexpected '{}' outside a tag", token.text));
    }
  }

  // Statements up to the tag `{% name` for one of `ends`, which is left
  // unread.
  std::vector<Stmt> bodyUntil(std::initializer_list<std::string_view> ends,
                              std::string_view opener, int openLine) {
    std::vector<Stmt> body;
    while (true) {
      if (!peek())
        fail(openLine,
             fmt::format("'{}' block without its '{}'", opener, *ends.begin()));
      if (isKind(TokenKind::openStatement))
        for (std::string_view end : ends)
          if (isWord(end, 1))
            return body;
      body.push_back(statement());
    }
  }
  void endTag(std::string_view name) {
    expectKind(TokenKind::openStatement, "'{%'");
    if (!isWord(name))
      unexpected(fmt::format("'{}'", name));
    ++at_;
    expectKind(TokenKind::closeStatement, "'%}'");
  }

  Stmt block() {
    Nested nested(*this);
    int line = this->line();
    std::string name = identifier("a statement name");
    if (name == "set")
      return setStatement(line);
    if (name == "if")
      return ifStatement(line);
    if (name == "for")
      return forStatement(line);
    if (name == "macro")
      return macroStatement(line);
    if (name == "call")
      return callStatement(line);
    if (name == "filter")
      return filterStatement(line);
    if (name == "break" || name == "continue") {
      expectKind(TokenKind::closeStatement, "'%}'");
      return Stmt{.kind = name == "break" ? Stmt::Kind::breakLoop
                                          : Stmt::Kind::continueLoop,
                  .line = line};
    }
    // A chat template comes as one file: there is nothing to load.
    if (name == "include" || name == "import" || name == "from" ||
        name == "extends")
      fail(line, fmt::format("'{}' is not supported: a chat template is one "
                             "file and cannot include, import or extend "
                             "another",
                             name));
    fail(line, fmt::format("statement '{}' is not supported", name));
  }

  Stmt setStatement(int line) {
    Stmt set{.kind = Stmt::Kind::set, .line = line};
    set.target = expressionSequence(false);
    if (isSymbol("=")) {
      ++at_;
      set.value = expressionSequence(false);
      expectKind(TokenKind::closeStatement, "'%}'");
      return set;
    }
    expectKind(TokenKind::closeStatement, "'=' or '%}'");
    set.body = bodyUntil({"endset"}, "set", line);
    endTag("endset");
    return set;
  }

  Stmt ifStatement(int line) {
    Stmt branch{.kind = Stmt::Kind::ifBlock, .line = line};
    branch.condition = expression();
    expectKind(TokenKind::closeStatement, "'%}'");
    branch.body = bodyUntil({"endif", "elif", "else"}, "if", line);
    ++at_; // {%
    std::string next = take().text;
    if (next == "elif") {
      branch.orElse.push_back(ifStatement(tokens_[at_ - 1].line));
      return branch; // the innermost branch read the endif
    }
    if (next == "else") {
      expectKind(TokenKind::closeStatement, "'%}'");
      branch.orElse = bodyUntil({"endif"}, "if", line);
      ++at_;
      ++at_;
    }
    expectKind(TokenKind::closeStatement, "'%}'");
    return branch;
  }

  Stmt forStatement(int line) {
    Stmt loop{.kind = Stmt::Kind::forLoop, .line = line};
    loop.target = expressionSequence(true);
    auto isName = [](const ExprPtr &expr) {
      return expr->kind == Expr::Kind::variable;
    };
    if (!isName(loop.target) &&
        !(loop.target->kind == Expr::Kind::tuple &&
          std::all_of(loop.target->items.begin(), loop.target->items.end(),
                      isName)))
      fail(line, "a for loop's target must be a name or names");
    if (!isWord("in"))
      unexpected("'in'");
    ++at_;
    loop.value = expression();
    if (loop.value->kind == Expr::Kind::select) {
      loop.condition = std::move(loop.value->object);
      loop.value = std::move(loop.value->operand);
    }
    if (isWord("recursive"))
      fail(this->line(), "recursive for loops are not supported");
    expectKind(TokenKind::closeStatement, "'%}'");
    loop.body = bodyUntil({"endfor", "else"}, "for", line);
    if (isWord("else", 1)) {
      at_ += 2;
      expectKind(TokenKind::closeStatement, "'%}'");
      loop.orElse = bodyUntil({"endfor"}, "for", line);
    }
    endTag("endfor");
    return loop;
  }

  std::vector<Parameter> parameters() {
    std::vector<Parameter> list;
    expectSymbol("(");
    while (!isSymbol(")")) {
      Parameter parameter{identifier("a parameter name"), nullptr};
      if (isSymbol("=")) {
        ++at_;
        parameter.defaultValue = expression();
      }
      list.push_back(std::move(parameter));
      if (!isSymbol(")"))
        expectSymbol(",");
    }
    ++at_;
    return list;
  }

  Stmt macroStatement(int line) {
    Stmt macro{.kind = Stmt::Kind::macro, .line = line};
    macro.text = identifier("the macro's name");
    macro.parameters = parameters();
    expectKind(TokenKind::closeStatement, "'%}'");
    macro.body = bodyUntil({"endmacro"}, "macro", line);
    endTag("endmacro");
    return macro;
  }

  Stmt callStatement(int line) {
    Stmt call{.kind = Stmt::Kind::callBlock, .line = line};
    if (isSymbol("("))
      call.parameters = parameters();
    call.value = postfix(primary());
    if (call.value->kind != Expr::Kind::call)
      fail(line, "a call block needs a macro call");
    expectKind(TokenKind::closeStatement, "'%}'");
    call.body = bodyUntil({"endcall"}, "call", line);
    endTag("endcall");
    return call;
  }

  Stmt filterStatement(int line) {
    Stmt filter{.kind = Stmt::Kind::filterBlock, .line = line};
    filter.value = filterCall(nullptr);
    expectKind(TokenKind::closeStatement, "'%}'");
    filter.body = bodyUntil({"endfilter"}, "filter", line);
    endTag("endfilter");
    return filter;
  }

  // ---- expressions, loosest first

  ExprPtr node(Expr::Kind kind, int line) {
    auto expr = std::make_unique<Expr>();
    expr->kind = kind;
    expr->line = line;
    return expr;
  }
  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, int line) {
    ExprPtr expr = node(Expr::Kind::binary, line);
    expr->name = std::move(op);
    expr->object = std::move(left);
    expr->operand = std::move(right);
    return expr;
  }

  // Comma-separated expressions form a tuple (`a, b = ...`).
  ExprPtr expressionSequence(bool targetsOnly) {
    int line = this->line();
    ExprPtr first = targetsOnly ? primary() : expression();
    if (!isSymbol(","))
      return first;
    ExprPtr tuple = node(Expr::Kind::tuple, line);
    tuple->items.push_back(std::move(first));
    while (isSymbol(",")) {
      ++at_;
      tuple->items.push_back(targetsOnly ? primary() : expression());
    }
    return tuple;
  }

  ExprPtr expression() {
    Nested nested(*this);
    int line = this->line();
    ExprPtr value = orExpression();
    if (!isWord("if"))
      return value;
    ++at_;
    ExprPtr condition = orExpression();
    if (!isWord("else")) {
      ExprPtr select = node(Expr::Kind::select, line);
      select->operand = std::move(value);
      select->object = std::move(condition);
      return select;
    }
    ++at_;
    ExprPtr ternary = node(Expr::Kind::ternary, line);
    ternary->operand = std::move(value);
    ternary->object = std::move(condition);
    ternary->alternative = expression();
    return ternary;
  }

  ExprPtr orExpression() {
    ExprPtr left = andExpression();
    while (isWord("or")) {
      int line = this->line();
      ++at_;
      left = binary("or", std::move(left), andExpression(), line);
    }
    return left;
  }

  ExprPtr andExpression() {
    ExprPtr left = notExpression();
    while (isWord("and")) {
      int line = this->line();
      ++at_;
      left = binary("and", std::move(left), notExpression(), line);
    }
    return left;
  }

  ExprPtr notExpression() {
    if (!isWord("not"))
      return comparison();
    Nested nested(*this);
    ExprPtr negation = node(Expr::Kind::unary, line());
    ++at_;
    negation->name = "not";
    negation->operand = notExpression();
    return negation;
  }

  ExprPtr comparison() {
    ExprPtr left = additive();
    static constexpr std::array kComparisons = {"==", "!=", "<",
                                                ">",  "<=", ">="};
    while (true) {
      int line = this->line();
      std::string op;
      if (isWord("not") && isWord("in", 1)) {
        op = "not in";
        at_ += 2;
      } else if (isWord("in")) {
        op = "in";
        ++at_;
      } else if (isKind(TokenKind::symbol) &&
                 std::find(kComparisons.begin(), kComparisons.end(),
                           peek()->text) != kComparisons.end()) {
        op = take().text;
      } else {
        return left;
      }
      left = binary(op, std::move(left), additive(), line);
    }
  }

  ExprPtr additive() {
    ExprPtr left = multiplicative();
    while (isSymbol("+") || isSymbol("-") || isSymbol("~")) {
      int line = this->line();
      std::string op = take().text;
      left = binary(op, std::move(left), multiplicative(), line);
    }
    return left;
  }

  ExprPtr multiplicative() {
    ExprPtr left = power();
    while (isSymbol("*") || isSymbol("/") || isSymbol("//") || isSymbol("%")) {
      int line = this->line();
      std::string op = take().text;
      left = binary(op, std::move(left), power(), line);
    }
    return left;
  }

  ExprPtr power() {
    ExprPtr left = testExpression();
    while (isSymbol("**")) {
      int line = this->line();
      ++at_;
      left = binary("**", std::move(left), testExpression(), line);
    }
    return left;
  }

  ExprPtr testExpression() {
    ExprPtr operand = filterExpression();
    while (isWord("is")) {
      ExprPtr test = node(Expr::Kind::test, line());
      ++at_;
      if (isWord("not")) {
        test->negated = true;
        ++at_;
      }
      test->name = identifier("a test name");
      if (!isTest(test->name))
        fail(test->line, fmt::format("test '{}' is not supported", test->name));
      if (isSymbol("("))
        test->arguments = arguments();
      test->object = std::move(operand);
      operand = std::move(test);
    }
    return operand;
  }

  ExprPtr filterExpression() {
    ExprPtr operand = unary();
    while (isSymbol("|")) {
      ++at_;
      operand = filterCall(std::move(operand));
    }
    return operand;
  }

  ExprPtr filterCall(ExprPtr operand) {
    ExprPtr filter = node(Expr::Kind::filter, line());
    filter->name = identifier("a filter name");
    if (!isFilter(filter->name))
      fail(filter->line,
           fmt::format("filter '{}' is not supported", filter->name));
    if (isSymbol("("))
      filter->arguments = arguments();
    filter->object = std::move(operand);
    return filter;
  }

  ExprPtr unary() {
    if (isKind(TokenKind::unarySign) || isSymbol("-") || isSymbol("+")) {
      Nested nested(*this);
      ExprPtr sign = node(Expr::Kind::unary, line());
      sign->name = take().text;
      sign->operand = unary();
      return sign;
    }
    return postfix(primary());
  }

  std::vector<Argument> arguments() {
    std::vector<Argument> list;
    expectSymbol("(");
    while (!isSymbol(")")) {
      if (isSymbol("*") || isSymbol("**"))
        fail(line(), "argument unpacking (*args, **kwargs) is not supported");
      Argument argument;
      if (isKind(TokenKind::identifier) && isSymbol("=", 1)) {
        argument.name = take().text;
        ++at_;
      }
      argument.value = expression();
      list.push_back(std::move(argument));
      if (!isSymbol(")"))
        expectSymbol(",");
    }
    ++at_;
    return list;
  }

  // Attributes, subscripts, slices and calls after a primary.
  ExprPtr postfix(ExprPtr object) {
    while (true) {
      int line = this->line();
      if (isSymbol(".")) {
        ++at_;
        const Token &name = take();
        ExprPtr access;
        if (name.kind == TokenKind::identifier) {
          access = node(Expr::Kind::attribute, line);
          access->name = name.text;
        } else if (name.kind == TokenKind::integer) {
          access = node(Expr::Kind::index, line);
          access->operand = node(Expr::Kind::literal, line);
          access->operand->literal = integerLiteral(name);
        } else {
          fail(line, "expected a name or an integer after '.'");
        }
        access->object = std::move(object);
        object = std::move(access);
      } else if (isSymbol("[")) {
        ++at_;
        object = subscript(std::move(object), line);
      } else if (isSymbol("(")) {
        ExprPtr call = node(Expr::Kind::call, line);
        call->arguments = arguments();
        call->object = std::move(object);
        object = std::move(call);
      } else {
        return object;
      }
    }
  }

  ExprPtr subscript(ExprPtr object, int line) {
    std::vector<ExprPtr> parts(1);
    while (!isSymbol("]")) {
      if (isSymbol(":")) {
        ++at_;
        if (parts.size() == 3)
          fail(line, "a slice has at most three parts");
        parts.emplace_back();
      } else {
        if (parts.back())
          unexpected("':' or ']'");
        parts.back() = expression();
      }
    }
    ++at_;
    if (parts.size() == 1) {
      if (!parts[0])
        fail(line, "empty subscript");
      ExprPtr index = node(Expr::Kind::index, line);
      index->object = std::move(object);
      index->operand = std::move(parts[0]);
      return index;
    }
    ExprPtr slice = node(Expr::Kind::slice, line);
    slice->object = std::move(object);
    parts.resize(3);
    slice->items = std::move(parts);
    return slice;
  }

  static int64_t integerLiteral(const Token &token) {
    int64_t value = 0;
    const char *begin = token.text.data(), *end = begin + token.text.size();
    begin += *begin == '+';
    auto [stop, error] = std::from_chars(begin, end, value);
    if (error != std::errc() || stop != end)
      fail(token.line,
           fmt::format("integer {} does not fit in 64 bits", token.text));
    return value;
  }

  ExprPtr primary() {
    int line = this->line();
    const Token &token = take();
    switch (token.kind) {
    case TokenKind::integer:
    case TokenKind::floating: {
      ExprPtr literal = node(Expr::Kind::literal, line);
      literal->literal = token.kind == TokenKind::integer
                             ? Value(integerLiteral(token))
                             : Value(std::strtod(token.text.c_str(), nullptr));
      return literal;
    }
    case TokenKind::string: {
      // Adjacent literals join, as in Python.
      std::string text = token.text;
      while (isKind(TokenKind::string))
        text += take().text;
      ExprPtr literal = node(Expr::Kind::literal, line);
      literal->literal = std::move(text);
      return literal;
    }
    case TokenKind::identifier: {
      ExprPtr variable = node(Expr::Kind::variable, line);
      variable->name = token.text;
      return variable;
    }
    case TokenKind::symbol:
      if (token.text == "(") {
        ExprPtr inner = expressionSequence(false);
        expectSymbol(")");
        return inner;
      }
      if (token.text == "[") {
        ExprPtr list = node(Expr::Kind::list, line);
        while (!isSymbol("]")) {
          list->items.push_back(expression());
          if (!isSymbol("]"))
            expectSymbol(",");
        }
        ++at_;
        return list;
      }
      if (token.text == "{") {
        ExprPtr dict = node(Expr::Kind::dict, line);
        while (!isSymbol("}")) {
          dict->items.push_back(expression());
          expectSymbol(":");
          dict->items.push_back(expression());
          if (!isSymbol("}"))
            expectSymbol(",");
        }
        ++at_;
        return dict;
      }
      break;
    default:
      break;
    }
    fail(line, fmt::format("unexpected '{}' in an expression", token.text));
  }

  const std::vector<Token> &tokens_;
  size_t at_ = 0;
  int depth_ = 0;
};

} // namespace

std::vector<Stmt> parse(const std::vector<Token> &tokens) {
  return Parser(tokens).run();
}

} // namespace moe::chat
