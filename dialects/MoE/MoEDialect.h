//===- MoEDialect.h - the moe dialect, enums and attributes -----*- C++ -*-===//
#pragma once

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "dialects/MoE/MoEDialect.h.inc"
#include "dialects/MoE/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoE/MoEAttrs.h.inc"
