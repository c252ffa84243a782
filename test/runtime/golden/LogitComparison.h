// Logits of a backend against a reference (HF's golden logits, or another
// backend's): relative L2 error over all positions and per block, and the
// share of positions with the reference's top-1 token, within a backend's
// tolerance.
#pragma once

#include "test/runtime/golden/GoldenFixture.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace moe {

struct LogitTolerance {
  /// rel-L2 of all compared positions together.
  double relativeL2 = 0;
  /// rel-L2 of each block alone (a prompt's positions, or a step's).
  double blockRelativeL2 = 0;
  /// Least share of positions with the reference's top-1 token. A position
  /// whose reference margin between the two picks is under relativeL2 × the
  /// row's logit RMS counts as agreeing: the tiny fixtures' logits are
  /// nearly flat, and rounding can swap such a pair.
  double top1Agreement = 0;
  /// Positions HF routed by a top-k gap under this are left out: bf16 may
  /// take other experts there, which changes the logits wholesale (0: none
  /// left out).
  double routerTieMargin = 0;
};

/// Whether each of `count` positions of prompt p from `first` on is left out
/// for a router near-tie.
inline std::vector<bool> routerTies(const Golden &golden,
                                    const LogitTolerance &tolerance, size_t p,
                                    size_t first, size_t count) {
  std::vector<bool> ties(count);
  for (size_t i = 0; i < count; ++i)
    ties[i] = golden.routerTie(p, first + i, tolerance.routerTieMargin);
  return ties;
}

/// Accumulates blocks of [positions, vocab] logits; expectWithin checks the
/// tolerance and prints the metrics (and every disagreement) as it goes.
class LogitComparison {
public:
  explicit LogitComparison(const LogitTolerance &tolerance)
      : tolerance_(tolerance) {}

  /// `leftOut[p]`: position p of the block is not compared.
  void add(const std::string &block, const float *got, const float *want,
           int64_t positions, int64_t vocab,
           const std::vector<bool> &leftOut = {}) {
    Squares squares;
    int64_t compared = 0;
    for (int64_t p = 0; p < positions; ++p) {
      if (!leftOut.empty() && leftOut[p]) {
        ++leftOut_;
        continue;
      }
      ++compared;
      Squares row = squaresOf(got + p * vocab, want + p * vocab, vocab);
      squares.diff += row.diff;
      squares.norm += row.norm;
      compareTop1(block, p, got + p * vocab, want + p * vocab, vocab);
    }
    positions_ += compared;
    if (squares.norm == 0)
      return;
    double relative = std::sqrt(squares.diff / squares.norm);
    if (relative > tolerance_.relativeL2)
      std::printf("[ metrics  ] %s: rel-L2 %.3e\n", block.c_str(), relative);
    if (relative > worstBlockRelativeL2_) {
      worstBlockRelativeL2_ = relative;
      worstBlock_ = block;
    }
    total_.diff += squares.diff;
    total_.norm += squares.norm;
  }

  void expectWithin(const std::string &what) const {
    double relative = std::sqrt(total_.diff / total_.norm);
    double agreement = double(agree_ + ties_) / double(positions_);
    std::printf("[ metrics  ] %s: rel-L2 %.3e (worst block %.3e), top-1 "
                "%lld/%lld strict, %lld more within a tie; %lld positions "
                "left out for HF router gaps under %.0e\n",
                what.c_str(), relative, worstBlockRelativeL2_,
                (long long)agree_, (long long)positions_, (long long)ties_,
                (long long)leftOut_, tolerance_.routerTieMargin);
    EXPECT_LE(relative, tolerance_.relativeL2) << what;
    EXPECT_LE(worstBlockRelativeL2_, tolerance_.blockRelativeL2)
        << what << ", " << worstBlock_;
    EXPECT_GE(agreement, tolerance_.top1Agreement) << what;
    // Near-tie routing may not swallow the comparison: the tiny fixtures'
    // nearly uniform routers leave up to a third of positions under the gap.
    EXPECT_LE(leftOut_ * 3, positions_ + leftOut_) << what;
  }

private:
  struct Squares {
    double diff = 0, norm = 0;
  };
  static Squares squaresOf(const float *got, const float *want, int64_t n) {
    Squares s;
    for (int64_t i = 0; i < n; ++i) {
      s.diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      s.norm += double(want[i]) * want[i];
    }
    return s;
  }

  void compareTop1(const std::string &block, int64_t position, const float *got,
                   const float *want, int64_t vocab) {
    int64_t mine = std::max_element(got, got + vocab) - got;
    int64_t theirs = std::max_element(want, want + vocab) - want;
    if (mine == theirs) {
      ++agree_;
      return;
    }
    double rms = std::sqrt(squaresOf(want, want, vocab).norm / double(vocab));
    double margin = double(want[theirs]) - double(want[mine]);
    ties_ += margin <= tolerance_.relativeL2 * rms;
    std::printf("[ metrics  ] %s position %lld: top-1 %lld vs %lld, "
                "reference margin %.3e, logit RMS %.3e\n",
                block.c_str(), (long long)position, (long long)mine,
                (long long)theirs, margin, rms);
  }

  LogitTolerance tolerance_;
  Squares total_;
  double worstBlockRelativeL2_ = 0;
  std::string worstBlock_;
  int64_t agree_ = 0, ties_ = 0, positions_ = 0, leftOut_ = 0;
};

} // namespace moe
