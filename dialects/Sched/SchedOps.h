//===- SchedOps.h - ops of the sched dialect --------------------*- C++ -*-===//
#pragma once

#include "dialects/Sched/SchedDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#define GET_OP_CLASSES
#include "dialects/Sched/SchedOps.h.inc"
