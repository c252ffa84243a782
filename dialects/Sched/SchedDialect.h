//===- SchedDialect.h - the sched dialect -----------------------*- C++ -*-===//
#pragma once

#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "dialects/Sched/SchedDialect.h.inc"
#include "dialects/Sched/SchedEnums.h.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/Sched/SchedTypes.h.inc"
#define GET_ATTRDEF_CLASSES
#include "dialects/Sched/SchedAttrs.h.inc"
