// The parsed template: statements (text, output, blocks) holding
// expressions. Every node keeps the source line it starts on, for errors.
#pragma once

#include "runtime/chat/Value.h"

#include <memory>
#include <string>
#include <vector>

namespace moe::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// One argument of a call, filter or test; `name` is empty when positional.
struct Argument {
  std::string name;
  ExprPtr value;
};

struct Expr {
  enum class Kind {
    literal,   // literal
    variable,  // name
    list,      // items
    tuple,     // items
    dict,      // items: key, value, key, value...
    attribute, // object.name
    index,     // object[key]
    slice,     // object[items[0]:items[1]:items[2]], null items absent
    call,      // object(arguments)
    unary,     // name operand: "not", "-", "+"
    binary,    // object name operand
    filter,    // object | name(arguments); a filter block's has no object
    test,      // object is [not] name(arguments)
    ternary,   // operand if object else alternative
    select,    // operand if object (undefined when false)
  };

  Kind kind;
  int line;
  Value literal;
  std::string name;
  ExprPtr object, operand, alternative;
  std::vector<ExprPtr> items;
  std::vector<Argument> arguments;
  bool negated = false; // `is not`
};

// A macro's or call block's parameter, with its default when it has one.
struct Parameter {
  std::string name;
  ExprPtr defaultValue;
};

struct Stmt {
  enum class Kind {
    text,        // text
    output,      // {{ value }}
    ifBlock,     // if value: body else orElse (elif nests in orElse)
    forLoop,     // for target in value [if condition]: body else orElse
    set,         // set target = value, or set target: body
    macro,       // macro name(parameters): body
    callBlock,   // call(parameters) value: body, passed as caller()
    filterBlock, // filter value (an Expr::Kind::filter without object)
    breakLoop,
    continueLoop,
  };

  Kind kind;
  int line;
  std::string text;
  ExprPtr value, target, condition;
  std::vector<Stmt> body, orElse;
  std::vector<Parameter> parameters;
};

} // namespace moe::chat
