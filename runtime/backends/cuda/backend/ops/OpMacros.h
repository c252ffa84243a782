// Early returns for the ops' launch functions, which allocate step memory
// and read their inputs' forms one after another. Included only by ops/*.cpp.
#pragma once

#include "runtime/backends/cuda/CudaCheck.h"

#define MOE_INPUT(var, expr)                                                   \
  auto var##Result_ = (expr);                                                  \
  if (!var##Result_)                                                           \
    return var##Result_.error();                                               \
  auto var = *var##Result_;

#define MOE_ALLOC(var, T, count, what)                                         \
  T *var = nullptr;                                                            \
  {                                                                            \
    auto moeAlloc_ = step.alloc<T>(count, what);                               \
    if (!moeAlloc_)                                                            \
      return moeAlloc_.error();                                                \
    var = *moeAlloc_;                                                          \
  }
