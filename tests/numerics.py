"""Tolerances for comparisons whose two sides round differently, and the policy every equality test follows.

Policy (tests that compare two computations):
- `torch.equal` / `atol=0` only where the two sides run the same kernels on the same shapes in the same order
  (a rerun, a resume, an index into a tensor, a per-seed generator), i.e. bit-exact by construction;
- otherwise a tolerance from the dtype's unit roundoff u and the length n of the reductions involved: a sum of n
  products rounds to within gamma_n = n u / (1 - n u) of its magnitude (Higham, "Accuracy and Stability of
  Numerical Algorithms", Lemma 3.1) in any order, so another batch shape, SIMD width (AVX2 vs AVX512, ATen's
  `default`) or thread count moves it by at most 2 gamma_n times the sum of |terms|; each test says what its
  sums are and how much the compared output amplifies them;
- a tensor that feeds a comparison or a decision never comes from a kernel whose summation order follows thread
  timing, or even a rerun differs: on the CPU the backward of x[idx] (index_put_ with accumulate=True) adds float32
  values with atomics once it has >= 32768 elements and > 1 thread; gather with index_select (its backward,
  index_add, sums in index order: fsd3d/renderer.py, "Gradients");
- tests whose comparison depends on the CPU's kernels carry `@pytest.mark.numerics`: CI runs them a second
  time under other instruction sets (ATEN_CPU_CAPABILITY=default / avx2, MKL_ENABLE_INSTRUCTIONS=AVX2: the
  BLAS path an AMD CPU takes) and thread counts (`.ci/run`).
"""
from __future__ import annotations

import os

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p: half the gap between 1 and the next float (float32 5.96e-8, float64 1.11e-16)."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of a sum of n terms, whatever the order."""
    nu = n * unit_roundoff(dtype)
    assert nu < 0.5, f"{n} terms in {dtype}: the bound says nothing"
    return nu / (1.0 - nu)


def reorder_atol(n: int, dtype: torch.dtype, magnitude: float = 1.0, gain: float = 1.0) -> float:
    """How far two evaluations of a sum of n terms in another order can be apart: 2 gamma_n times the sum of
    the terms' magnitudes (`magnitude`), times the `gain` with which the compared output amplifies it."""
    return 2.0 * gamma(n, dtype) * magnitude * gain


# Reference renders at another camera batch: the projected pixel coordinates (|u| <= ~2R, R <= 32 px here) come
# from 4-term float32 products, so they move by <= 2 gamma_4 * 64 px ~ 3e-5 px between batch shapes; a splat's
# pixel value changes by at most ~1/px per px of motion (opacity <= 1 over a footprint >= ~1 px wide), and the
# compositing of <= a few hundred Gaussians per pixel adds its own gamma_n. Measured with MKL's AVX2 path against
# the AVX512 one: 1.3e-6. Bound used: 3e-5.
RENDER_F32_ATOL = 3e-5


def probable_atol(n: int, dtype: torch.dtype, magnitude: float = 1.0, gain: float = 1.0, lam: float = 4.0) -> float:
    """The probabilistic counterpart of `reorder_atol` (Higham & Mary 2019: rounding errors of a sum of n terms
    grow like lam sqrt(n) u, exceeded with probability <= 2 exp(-lam^2 / 2) ~ 7e-4 for lam = 4), for float32 sums
    whose worst case says nothing useful: 2 lam sqrt(n) u times the sum of |terms|, times `gain`."""
    return 2.0 * lam * n**0.5 * unit_roundoff(dtype) * magnitude * gain


# Threads the tests run with: 1 (tiny tensors run faster single-threaded, immune to other processes on a 2-core
# machine); .ci/run sets FSD_TEST_THREADS=2 for one pass of the numerics tests, so a tolerance that holds only at
# one thread count fails in CI.
TEST_THREADS = int(os.environ.get("FSD_TEST_THREADS", "1"))
