//===- SchedOps.cpp - the sched dialect -----------------------------------===//

#include "dialects/Sched/SchedOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::sched;

#include "dialects/Sched/SchedDialect.cpp.inc"
#include "dialects/Sched/SchedEnums.cpp.inc"
#define GET_TYPEDEF_CLASSES
#include "dialects/Sched/SchedTypes.cpp.inc"
#define GET_ATTRDEF_CLASSES
#include "dialects/Sched/SchedAttrs.cpp.inc"

void SchedDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/Sched/SchedOps.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/Sched/SchedTypes.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/Sched/SchedAttrs.cpp.inc"
      >();
}

LogicalResult StepOp::verifyRegions() {
  for (Operation &op : getBody().front())
    if (!isa<CopyOp, ComputeOp>(op))
      return op.emitOpError() << "is not a job; a sched.step holds only "
                                 "sched.copy and sched.compute";
  return success();
}

/// Checks a job's stream and buffer against their declarations.
static LogicalResult verifyJobSymbols(Operation *job,
                                      SymbolTableCollection &symbols,
                                      FlatSymbolRefAttr streamRef,
                                      StreamKind wantedStream,
                                      FlatSymbolRefAttr poolRef,
                                      std::optional<PoolKind> wantedPool,
                                      int64_t buffer) {
  auto stream = symbols.lookupNearestSymbolFrom<StreamOp>(job, streamRef);
  if (!stream)
    return job->emitOpError() << streamRef << " is not a sched.stream";
  if (stream.getKind() != wantedStream)
    return job->emitOpError()
           << "runs on " << streamRef << " (" << stringifyStreamKind(stream.getKind())
           << ") but belongs on a " << stringifyStreamKind(wantedStream)
           << " stream";
  if (!poolRef) {
    if (wantedPool)
      return job->emitOpError() << "needs a '"
                                << stringifyPoolKind(*wantedPool)
                                << "' buffer pool";
    return success();
  }
  auto pool = symbols.lookupNearestSymbolFrom<BufferPoolOp>(job, poolRef);
  if (!pool)
    return job->emitOpError() << poolRef << " is not a sched.buffer_pool";
  if (wantedPool && pool.getKind() != *wantedPool)
    return job->emitOpError() << "uses " << poolRef << " ("
                              << stringifyPoolKind(pool.getKind())
                              << "), expected a "
                              << stringifyPoolKind(*wantedPool) << " pool";
  if (buffer < 0 || buffer >= static_cast<int64_t>(pool.getCount()))
    return job->emitOpError() << "buffer " << buffer << " is not one of the "
                              << pool.getCount() << " in " << poolRef;
  return success();
}

static LogicalResult verifyJobCommon(Operation *op, double seconds,
                                     int64_t sequences) {
  if (!(seconds >= 0.0))
    return op->emitOpError() << "predicted seconds must be >= 0";
  if (sequences < 0)
    return op->emitOpError() << "sequences must be >= 0";
  return success();
}

LogicalResult CopyOp::verify() {
  if (!(getBytes().convertToDouble() > 0.0))
    return emitOpError() << "a copy moves a positive number of bytes";
  return verifyJobCommon(*this, getSeconds().convertToDouble(), getSequences());
}

LogicalResult CopyOp::verifySymbolUses(SymbolTableCollection &symbols) {
  CopyKind kind = getKind();
  bool toHost = kind == CopyKind::kv_store || kind == CopyKind::hidden_store;
  // Loads land in a buffer; a KV store reads either the staging buffer its
  // micro-batch was loaded into (decode) or prefill's own output (no pool);
  // embedding rows need no ring slot.
  std::optional<PoolKind> pool;
  if (kind == CopyKind::kv_load)
    pool = PoolKind::kv_staging;
  else if (kind == CopyKind::hidden_load || kind == CopyKind::hidden_store)
    pool = PoolKind::hidden;
  else if (getPoolAttr())
    pool = kind == CopyKind::kv_store ? PoolKind::kv_staging
                                      : PoolKind::weight_ring;
  return verifyJobSymbols(*this, symbols, getStreamAttr(),
                          toHost ? StreamKind::d2h : StreamKind::h2d,
                          getPoolAttr(), pool, getBuffer());
}

LogicalResult ComputeOp::verify() {
  return verifyJobCommon(*this, getSeconds().convertToDouble(), getSequences());
}

LogicalResult ComputeOp::verifySymbolUses(SymbolTableCollection &symbols) {
  // The host's cores run decode attention over host KV; the GPU all else.
  StreamKind wanted = getStage() == kHostAttentionStage ? StreamKind::host
                                                        : StreamKind::compute;
  return verifyJobSymbols(*this, symbols, getStreamAttr(), wanted,
                          getPoolAttr(), std::nullopt, getBuffer());
}

#define GET_OP_CLASSES
#include "dialects/Sched/SchedOps.cpp.inc"
