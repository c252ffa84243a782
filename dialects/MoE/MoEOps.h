//===- MoEOps.h - ops of the moe dialect ------------------------*- C++ -*-===//
#pragma once

#include "dialects/MoE/MoEDialect.h"
#include "dialects/MoE/MoEInterfaces.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/MoE/MoEOps.h.inc"
