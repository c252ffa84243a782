#include "runtime/chat/Evaluator.h"

#include "runtime/chat/Filters.h"
#include "runtime/chat/Methods.h"
#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Tests.h"
#include "runtime/chat/Unicode.h"

#include <fmt/format.h>

#include <cmath>
#include <ctime>
#include <optional>
#include <unordered_map>

namespace moe::chat {
namespace {

using Kind = Value::Kind;

// Deep enough for any real template, shallow enough to fail before the
// stack does on a macro that calls itself forever.
constexpr int kMaxCallDepth = 256;
// The most bytes or items one repetition or range() makes: far beyond any
// prompt, short of exhausting memory.
constexpr uint64_t kMaxItems = uint64_t{1} << 28;

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> variables;

  const Value *find(const std::string &name) const {
    for (const Scope *scope = this; scope; scope = scope->parent.get())
      if (auto it = scope->variables.find(name); it != scope->variables.end())
        return &it->second;
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

ScopePtr childOf(ScopePtr parent) {
  auto scope = std::make_shared<Scope>();
  scope->parent = std::move(parent);
  return scope;
}

Value function(std::string name,
               std::function<Value(const CallArguments &)> call) {
  return Value(std::make_shared<const Callable>(
      Callable{std::move(name), std::move(call)}));
}

// What an expression is in error messages: its name or dotted path when it
// has one.
std::string described(const Expr &expr) {
  switch (expr.kind) {
  case Expr::Kind::variable:
    return "'" + expr.name + "'";
  case Expr::Kind::attribute: {
    std::string object = described(*expr.object);
    if (object.starts_with('\''))
      return object.substr(0, object.size() - 1) + "." + expr.name + "'";
    return "attribute '" + expr.name + "'";
  }
  case Expr::Kind::index:
    if (expr.operand->kind == Expr::Kind::literal) {
      std::string object = described(*expr.object);
      if (object.starts_with('\''))
        return object.substr(0, object.size() - 1) + "[" +
               expr.operand->literal.repr() + "]'";
    }
    return "an item";
  default:
    return "a value";
  }
}

// Python's slicing of `length` items: the indices start, start + step...
std::vector<size_t> sliceIndices(size_t length, const Value &start,
                                 const Value &stop, const Value &step,
                                 int line) {
  auto integer = [&](const Value &value, int64_t fallback) {
    if (value.is(Kind::undefined) || value.is(Kind::none))
      return fallback;
    if (!value.is(Kind::integer))
      fail(line, "slice bounds must be integers");
    return value.asInteger();
  };
  int64_t n = int64_t(length);
  int64_t by = integer(step, 1);
  if (by == 0)
    fail(line, "slice step cannot be zero");
  auto clamp = [&](int64_t index, int64_t low, int64_t high) {
    if (index < 0)
      index += n;
    return std::clamp(index, low, high);
  };
  int64_t from = by > 0 ? clamp(integer(start, 0), 0, n)
                        : clamp(integer(start, n - 1), -1, n - 1);
  int64_t to = by > 0 ? clamp(integer(stop, n), 0, n)
                      : (stop.is(Kind::undefined) || stop.is(Kind::none)
                             ? -1
                             : clamp(integer(stop, -1), -1, n - 1));
  std::vector<size_t> indices;
  for (int64_t i = from; by > 0 ? i < to : i > to; i += by)
    indices.push_back(size_t(i));
  return indices;
}

class Renderer {
public:
  enum class Flow { normal, breakLoop, continueLoop };

  Flow render(const std::vector<Stmt> &body, const ScopePtr &scope,
              std::string &out) {
    for (const Stmt &stmt : body)
      if (Flow flow = render(stmt, scope, out); flow != Flow::normal)
        return flow;
    return Flow::normal;
  }

private:
  Flow render(const Stmt &stmt, const ScopePtr &scope, std::string &out) {
    switch (stmt.kind) {
    case Stmt::Kind::text:
      out += stmt.text;
      return Flow::normal;
    case Stmt::Kind::output:
      out += eval(*stmt.value, scope).str();
      return Flow::normal;
    case Stmt::Kind::ifBlock:
      return render(eval(*stmt.condition, scope).truthy() ? stmt.body
                                                          : stmt.orElse,
                    scope, out);
    case Stmt::Kind::forLoop:
      forLoop(stmt, scope, out);
      return Flow::normal;
    case Stmt::Kind::set:
      assign(*stmt.target,
             stmt.value ? eval(*stmt.value, scope)
                        : Value(captured(stmt.body, scope)),
             scope, stmt.line);
      return Flow::normal;
    case Stmt::Kind::macro:
      scope->variables[stmt.text] = macro(stmt, scope);
      return Flow::normal;
    case Stmt::Kind::callBlock:
      out += callBlock(stmt, scope).str();
      return Flow::normal;
    case Stmt::Kind::filterBlock: {
      CallArguments arguments = evalArguments(stmt.value->arguments, scope);
      out += applyFilter(stmt.value->name, captured(stmt.body, scope),
                         arguments, stmt.line)
                 .str();
      return Flow::normal;
    }
    case Stmt::Kind::breakLoop:
      return Flow::breakLoop;
    case Stmt::Kind::continueLoop:
      return Flow::continueLoop;
    }
    return Flow::normal;
  }

  std::string captured(const std::vector<Stmt> &body, const ScopePtr &scope) {
    std::string text;
    render(body, scope, text);
    return text;
  }

  void bind(const Expr &target, const Value &value, Scope &scope, int line) {
    if (target.kind == Expr::Kind::variable) {
      scope.variables[target.name] = value;
      return;
    }
    const List *values = value.is(Kind::list) ? &value.asList() : nullptr;
    if (!values)
      fail(line, fmt::format("cannot unpack {} into {} names",
                             kindPhrase(value.kind()), target.items.size()));
    if (values->size() != target.items.size())
      fail(line, fmt::format("cannot unpack {} values into {} names",
                             values->size(), target.items.size()));
    for (size_t i = 0; i < values->size(); ++i)
      bind(*target.items[i], (*values)[i], scope, line);
  }

  void assign(const Expr &target, const Value &value, const ScopePtr &scope,
              int line) {
    if (target.kind == Expr::Kind::attribute) {
      Value object = eval(*target.object, scope);
      if (!object.is(Kind::nameSpace))
        fail(line,
             fmt::format("cannot set an attribute of {} ({}): only "
                         "namespace() objects take assignments",
                         described(*target.object), kindPhrase(object.kind())));
      object.asNamespace().attributes.set(target.name, value);
      return;
    }
    if (target.kind != Expr::Kind::variable && target.kind != Expr::Kind::tuple)
      fail(line, "cannot assign to this expression");
    bind(target, value, *scope, line);
  }

  void forLoop(const Stmt &stmt, const ScopePtr &scope, std::string &out) {
    Value iterable = eval(*stmt.value, scope);
    List items;
    switch (iterable.kind()) {
    case Kind::undefined:
      break; // as Jinja: an undefined value iterates as empty
    case Kind::list:
    case Kind::string:
    case Kind::dict:
      items = applyFilter("list", iterable, {}, stmt.line).asList();
      break;
    default:
      fail(stmt.line,
           fmt::format("cannot loop over {} ({})", described(*stmt.value),
                       kindPhrase(iterable.kind())));
    }
    ScopePtr loopScope = childOf(scope);
    if (stmt.condition) {
      List kept;
      for (Value &item : items) {
        bind(*stmt.target, item, *loopScope, stmt.line);
        if (eval(*stmt.condition, loopScope).truthy())
          kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    int64_t length = int64_t(items.size());
    for (int64_t i = 0; i < length; ++i) {
      Dict loop;
      loop.set("index", i + 1);
      loop.set("index0", i);
      loop.set("revindex", length - i);
      loop.set("revindex0", length - i - 1);
      loop.set("first", i == 0);
      loop.set("last", i == length - 1);
      loop.set("length", length);
      loop.set("previtem", i > 0 ? items[size_t(i - 1)] : Value());
      loop.set("nextitem", i + 1 < length ? items[size_t(i + 1)] : Value());
      loopScope->variables["loop"] = Value(std::move(loop));
      bind(*stmt.target, items[size_t(i)], *loopScope, stmt.line);
      if (render(stmt.body, loopScope, out) == Flow::breakLoop)
        break;
    }
    if (items.empty())
      render(stmt.orElse, loopScope, out);
  }

  // Binds a macro's (or call block's) parameters in `scope`: positional
  // arguments in order, then keywords by name, then defaults; extra ones in
  // varargs and kwargs, as Jinja gives them.
  void bindParameters(const std::vector<Parameter> &parameters,
                      const CallArguments &arguments, const ScopePtr &scope) {
    List varargs;
    Dict kwargs;
    for (size_t i = parameters.size(); i < arguments.positional.size(); ++i)
      varargs.push_back(arguments.positional[i]);
    for (const auto &keyword : arguments.keywords)
      if (std::none_of(
              parameters.begin(), parameters.end(),
              [&](const Parameter &p) { return p.name == keyword.first; }))
        kwargs.set(keyword.first, keyword.second);
    for (size_t i = 0; i < parameters.size(); ++i) {
      const Parameter &parameter = parameters[i];
      if (const Value *given = arguments.get(i, parameter.name))
        scope->variables[parameter.name] = *given;
      else
        scope->variables[parameter.name] =
            parameter.defaultValue ? eval(*parameter.defaultValue, scope)
                                   : Value();
    }
    scope->variables["varargs"] = Value(std::move(varargs));
    scope->variables["kwargs"] = Value(std::move(kwargs));
  }

  Value macro(const Stmt &stmt, const ScopePtr &definedIn) {
    std::weak_ptr<Scope> weakScope = definedIn;
    return function(
        stmt.text, [this, &stmt, weakScope](const CallArguments &arguments) {
          if (++depth_ > kMaxCallDepth)
            fail(stmt.line, fmt::format("macro '{}' nests deeper than {} calls",
                                        stmt.text, kMaxCallDepth));
          ScopePtr scope = childOf(weakScope.lock());
          bindParameters(stmt.parameters, arguments, scope);
          if (arguments.caller)
            scope->variables["caller"] = Value(arguments.caller);
          std::string text = captured(stmt.body, scope);
          --depth_;
          return Value(std::move(text));
        });
  }

  Value callBlock(const Stmt &stmt, const ScopePtr &scope) {
    const Expr &call = *stmt.value;
    Value callee = eval(*call.object, scope);
    if (!callee.is(Kind::callable))
      fail(stmt.line,
           fmt::format("{} is not a macro", described(*call.object)));
    CallArguments arguments = evalArguments(call.arguments, scope);
    arguments.caller = std::make_shared<const Callable>(Callable{
        "caller", [this, &stmt, scope](const CallArguments &callerArguments) {
          ScopePtr body = childOf(scope);
          bindParameters(stmt.parameters, callerArguments, body);
          return Value(captured(stmt.body, body));
        }});
    return invoke(callee, arguments, stmt.line);
  }

  Value invoke(const Value &callee, const CallArguments &arguments, int line) {
    try {
      return callee.asCallable().call(arguments);
    } catch (TemplateError &error) {
      if (error.line == 0)
        error.line = line; // a builtin's error, at the call that failed
      throw;
    }
  }

  CallArguments evalArguments(const std::vector<Argument> &arguments,
                              const ScopePtr &scope) {
    CallArguments values;
    for (const Argument &argument : arguments) {
      Value value = eval(*argument.value, scope);
      if (argument.name.empty())
        values.positional.push_back(std::move(value));
      else
        values.keywords.emplace_back(argument.name, std::move(value));
    }
    return values;
  }

  Value eval(const Expr &expr, const ScopePtr &scope) {
    switch (expr.kind) {
    case Expr::Kind::literal:
      return expr.literal;
    case Expr::Kind::variable: {
      const Value *value = scope->find(expr.name);
      return value ? *value : Value();
    }
    case Expr::Kind::list:
    case Expr::Kind::tuple: {
      List list;
      for (const ExprPtr &item : expr.items)
        list.push_back(eval(*item, scope));
      return list;
    }
    case Expr::Kind::dict: {
      Dict dict;
      for (size_t i = 0; i + 1 < expr.items.size(); i += 2) {
        Value key = eval(*expr.items[i], scope);
        if (!key.is(Kind::string))
          fail(expr.line, "dict keys must be strings");
        dict.set(key.asString(), eval(*expr.items[i + 1], scope));
      }
      return dict;
    }
    case Expr::Kind::attribute:
      return attribute(eval(*expr.object, scope), expr.name);
    case Expr::Kind::index:
      return item(eval(*expr.object, scope), eval(*expr.operand, scope));
    case Expr::Kind::slice:
      return slice(expr, scope);
    case Expr::Kind::call:
      return call(expr, scope);
    case Expr::Kind::unary:
      return unary(expr, scope);
    case Expr::Kind::binary:
      return binary(expr, scope);
    case Expr::Kind::filter:
      return applyFilter(expr.name, eval(*expr.object, scope),
                         evalArguments(expr.arguments, scope), expr.line);
    case Expr::Kind::test: {
      std::vector<Value> arguments;
      for (const Argument &argument : expr.arguments)
        arguments.push_back(eval(*argument.value, scope));
      bool passes =
          applyTest(expr.name, eval(*expr.object, scope), arguments, expr.line);
      return passes != expr.negated;
    }
    case Expr::Kind::ternary:
      return eval(*expr.object, scope).truthy()
                 ? eval(*expr.operand, scope)
                 : eval(*expr.alternative, scope);
    case Expr::Kind::select:
      return eval(*expr.object, scope).truthy() ? eval(*expr.operand, scope)
                                                : Value();
    }
    return Value();
  }

  // `object.name`: a dict's method, else its key (as Python's Jinja, which
  // looks for an attribute first: `schema.items()` of a schema with an
  // "items" key is the method); a namespace's attribute; a string's method;
  // undefined otherwise.
  static Value attribute(const Value &object, const std::string &name) {
    if (object.is(Kind::dict)) {
      if (Value bound = method(object, name); !bound.is(Kind::undefined))
        return bound;
      const Value *found = object.asDict().find(name);
      return found ? *found : Value();
    }
    if (object.is(Kind::nameSpace)) {
      const Value *found = object.asNamespace().attributes.find(name);
      return found ? *found : Value();
    }
    return method(object, name);
  }

  // `object[key]`: a list's or string's item by (negative) index, a dict's
  // by key (else its method, as `.key` the other way round), a namespace's
  // by key, undefined when absent.
  static Value item(const Value &object, const Value &key) {
    if (key.is(Kind::string)) {
      if (object.is(Kind::dict))
        if (const Value *found = object.asDict().find(key.asString()))
          return *found;
      return attribute(object, key.asString());
    }
    if (!key.is(Kind::integer))
      return Value();
    int64_t index = key.asInteger();
    if (object.is(Kind::list)) {
      int64_t size = int64_t(object.asList().size());
      index += index < 0 ? size : 0;
      return index >= 0 && index < size ? object.asList()[size_t(index)]
                                        : Value();
    }
    if (object.is(Kind::string)) {
      std::vector<char32_t> points = codePoints(object.asString());
      int64_t size = int64_t(points.size());
      index += index < 0 ? size : 0;
      if (index < 0 || index >= size)
        return Value();
      std::string character;
      appendUtf8(character, points[size_t(index)]);
      return character;
    }
    return Value();
  }

  Value slice(const Expr &expr, const ScopePtr &scope) {
    Value object = eval(*expr.object, scope);
    Value bounds[3];
    for (size_t i = 0; i < 3; ++i)
      if (expr.items[i])
        bounds[i] = eval(*expr.items[i], scope);
    if (object.is(Kind::list)) {
      List out;
      for (size_t i : sliceIndices(object.asList().size(), bounds[0], bounds[1],
                                   bounds[2], expr.line))
        out.push_back(object.asList()[i]);
      return out;
    }
    if (object.is(Kind::string)) {
      std::vector<char32_t> points = codePoints(object.asString()), out;
      for (size_t i : sliceIndices(points.size(), bounds[0], bounds[1],
                                   bounds[2], expr.line))
        out.push_back(points[i]);
      return toUtf8(out);
    }
    fail(expr.line, fmt::format("cannot slice {} ({})", described(*expr.object),
                                kindPhrase(object.kind())));
  }

  Value call(const Expr &expr, const ScopePtr &scope) {
    Value callee = eval(*expr.object, scope);
    if (!callee.is(Kind::callable)) {
      if (expr.object->kind == Expr::Kind::attribute) {
        Value object = eval(*expr.object->object, scope);
        if (object.is(Kind::string) || object.is(Kind::dict) ||
            object.is(Kind::list))
          fail(expr.line,
               fmt::format("method '{}' of {} is not supported",
                           expr.object->name, kindPhrase(object.kind())));
      }
      fail(expr.line,
           fmt::format("{} is not callable (it is {})", described(*expr.object),
                       kindPhrase(callee.kind())));
    }
    return invoke(callee, evalArguments(expr.arguments, scope), expr.line);
  }

  Value unary(const Expr &expr, const ScopePtr &scope) {
    Value operand = eval(*expr.operand, scope);
    if (expr.name == "not")
      return !operand.truthy();
    if (operand.is(Kind::integer) || operand.is(Kind::boolean)) {
      int64_t value =
          operand.is(Kind::boolean) ? operand.asBool() : operand.asInteger();
      if (expr.name == "-" && value == INT64_MIN)
        fail(expr.line, "integer overflow in unary '-'");
      return expr.name == "-" ? -value : value;
    }
    if (operand.is(Kind::floating))
      return expr.name == "-" ? -operand.asNumber() : operand.asNumber();
    fail(expr.line,
         fmt::format("unary '{}' does not apply to {} ({})", expr.name,
                     described(*expr.operand), kindPhrase(operand.kind())));
  }

  Value binary(const Expr &expr, const ScopePtr &scope) {
    const std::string &op = expr.name;
    Value left = eval(*expr.object, scope);
    if (op == "and")
      return left.truthy() ? eval(*expr.operand, scope) : left;
    if (op == "or")
      return left.truthy() ? left : eval(*expr.operand, scope);
    Value right = eval(*expr.operand, scope);
    if (op == "==")
      return left == right;
    if (op == "!=")
      return !(left == right);
    if (op == "~")
      return left.str() + right.str();
    if (op == "in" || op == "not in")
      return contains(right, left, expr.line, described(*expr.operand)) ==
             (op == "in");
    if (left.is(Kind::undefined) || right.is(Kind::undefined))
      fail(expr.line,
           fmt::format("{} is undefined",
                       described(left.is(Kind::undefined) ? *expr.object
                                                          : *expr.operand)));
    bool numbers = (left.isNumber() || left.is(Kind::boolean)) &&
                   (right.isNumber() || right.is(Kind::boolean));
    if (numbers)
      return arithmetic(op, left, right, expr.line);
    if (left.is(Kind::string) && right.is(Kind::string)) {
      const std::string &a = left.asString(), &b = right.asString();
      if (op == "+")
        return a + b;
      if (std::optional<bool> order = compared(op, a, b))
        return *order;
    }
    if (op == "+" && left.is(Kind::list) && right.is(Kind::list)) {
      List joined = left.asList();
      joined.insert(joined.end(), right.asList().begin(), right.asList().end());
      return joined;
    }
    if (op == "*" && (left.is(Kind::string) || left.is(Kind::list)) &&
        right.is(Kind::integer)) {
      int64_t times = std::max<int64_t>(0, right.asInteger());
      size_t each =
          left.is(Kind::string) ? left.asString().size() : left.asList().size();
      if (each > 0 && uint64_t(times) > kMaxItems / each)
        fail(expr.line,
             fmt::format("'*' would make more than {} items", kMaxItems));
      if (left.is(Kind::string)) {
        std::string repeated;
        for (int64_t i = 0; i < times; ++i)
          repeated += left.asString();
        return repeated;
      }
      List repeated;
      for (int64_t i = 0; i < times; ++i)
        repeated.insert(repeated.end(), left.asList().begin(),
                        left.asList().end());
      return repeated;
    }
    fail(expr.line,
         fmt::format("'{}' does not apply to {} and {}", op,
                     kindPhrase(left.kind()), kindPhrase(right.kind())));
  }

  // `a op b` for the ordering operators, nothing for the others.
  template <typename T>
  static std::optional<bool> compared(const std::string &op, const T &a,
                                      const T &b) {
    if (op == "<")
      return a < b;
    if (op == ">")
      return a > b;
    if (op == "<=")
      return a <= b;
    if (op == ">=")
      return a >= b;
    return std::nullopt;
  }

  // Numbers (booleans as 0 and 1): integers stay integers except under /
  // and negative powers, as in Python.
  static Value arithmetic(const std::string &op, const Value &left,
                          const Value &right, int line) {
    bool integers = !left.is(Kind::floating) && !right.is(Kind::floating);
    double a = left.asNumber(), b = right.asNumber();
    if (std::optional<bool> order = compared(op, a, b))
      return *order;
    if (integers && op != "/" && op != "**") {
      auto exact = [](const Value &v) {
        return v.is(Kind::boolean) ? int64_t(v.asBool()) : v.asInteger();
      };
      int64_t x = exact(left), y = exact(right), result;
      // Python's integers have no bound; these do, and say so.
      if ((op == "+" && __builtin_add_overflow(x, y, &result)) ||
          (op == "-" && __builtin_sub_overflow(x, y, &result)) ||
          (op == "*" && __builtin_mul_overflow(x, y, &result)) ||
          (y == -1 && x == INT64_MIN))
        fail(line, fmt::format("integer overflow in {} {} {}", x, op, y));
      if (op == "+" || op == "-" || op == "*")
        return result;
      if (y == 0)
        fail(line, "division by zero");
      // Python's floor division and modulo: rounded toward -infinity.
      int64_t quotient = x / y - ((x % y != 0) && ((x < 0) != (y < 0)));
      if (op == "//")
        return quotient;
      if (op == "%")
        return x - quotient * y;
    }
    if (op == "+")
      return a + b;
    if (op == "-")
      return a - b;
    if (op == "*")
      return a * b;
    if (op == "**") {
      double power = std::pow(a, b);
      if (!integers || b < 0)
        return power;
      if (!(std::fabs(power) < 0x1p63))
        fail(line, fmt::format("integer overflow in {} ** {}", a, b));
      return int64_t(power);
    }
    if (b == 0)
      fail(line, "division by zero");
    if (op == "/")
      return a / b;
    if (op == "//")
      return std::floor(a / b);
    return a - std::floor(a / b) * b;
  }

  int depth_ = 0;
};

Value namespaceOf(const CallArguments &arguments) {
  auto ns = std::make_shared<Namespace>();
  if (!arguments.positional.empty()) {
    const Value &initial = arguments.positional[0];
    if (!initial.is(Kind::dict))
      fail(0, "namespace() takes a dict or keyword arguments");
    for (const auto &[key, value] : initial.asDict().entries())
      ns->attributes.set(key, value);
  }
  for (const auto &[key, value] : arguments.keywords)
    ns->attributes.set(key, value);
  return Value(std::move(ns));
}

Value range(const CallArguments &arguments) {
  std::vector<int64_t> bounds;
  for (const Value &value : arguments.positional) {
    if (!value.is(Kind::integer))
      fail(0, "range() takes integers");
    bounds.push_back(value.asInteger());
  }
  if (bounds.empty() || bounds.size() > 3)
    fail(0, "range() takes one to three integers");
  int64_t start = bounds.size() == 1 ? 0 : bounds[0];
  int64_t stop = bounds.size() == 1 ? bounds[0] : bounds[1];
  int64_t step = bounds.size() == 3 ? bounds[2] : 1;
  if (step == 0)
    fail(0, "range() step cannot be zero");
  // Counted in unsigned arithmetic, which wraps where int64_t would
  // overflow.
  uint64_t span = step > 0
                      ? (stop > start ? uint64_t(stop) - uint64_t(start) : 0)
                      : (start > stop ? uint64_t(start) - uint64_t(stop) : 0);
  uint64_t stride = step > 0 ? uint64_t(step) : 0 - uint64_t(step);
  uint64_t count = span / stride + (span % stride != 0);
  if (count > kMaxItems)
    fail(0, fmt::format("range() of more than {} items", kMaxItems));
  List out;
  for (uint64_t k = 0; k < count; ++k)
    out.push_back(int64_t(uint64_t(start) + k * uint64_t(step)));
  return out;
}

Value strftimeNow(const CallArguments &arguments, std::time_t now) {
  if (arguments.positional.empty() || !arguments.positional[0].is(Kind::string))
    fail(0, "strftime_now() needs a format string");
  std::tm local{};
  localtime_r(&now, &local);
  char buffer[256];
  size_t length =
      std::strftime(buffer, sizeof(buffer),
                    arguments.positional[0].asString().c_str(), &local);
  return std::string(buffer, length);
}

} // namespace

std::string evaluate(const std::vector<Stmt> &program, const Dict &variables,
                     std::optional<int64_t> now) {
  auto globals = std::make_shared<Scope>();
  for (const char *name : {"true", "True"})
    globals->variables[name] = true;
  for (const char *name : {"false", "False"})
    globals->variables[name] = false;
  for (const char *name : {"none", "None"})
    globals->variables[name] = Value::none();
  globals->variables["namespace"] = function("namespace", namespaceOf);
  globals->variables["range"] = function("range", range);
  globals->variables["strftime_now"] =
      function("strftime_now", [now](const CallArguments &arguments) {
        return strftimeNow(arguments,
                           now ? std::time_t(*now) : std::time(nullptr));
      });
  globals->variables["raise_exception"] =
      function("raise_exception", [](const CallArguments &arguments) -> Value {
        fail(0, "the template raised an error: " +
                    (arguments.positional.empty()
                         ? std::string()
                         : arguments.positional[0].str()));
      });
  for (const auto &[name, value] : variables.entries())
    globals->variables[name] = value;
  std::string out;
  Renderer().render(program, childOf(globals), out);
  return out;
}

} // namespace moe::chat
