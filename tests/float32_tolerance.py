"""Float32 tolerances derived from what reordering a sum can change, not from one processor's results.

A float32 sum (or dot product) of n terms, evaluated in any order and blocking
(SIMD width, threads, BLAS kernel, XLA fusion, FMA or not), differs from the
exact sum by at most gamma_n * sum(|terms|), gamma_n = n*u / (1 - n*u) with
u = 2**-24 the unit roundoff (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., eq. (3.5) and Lemma 3.1). Two such evaluations differ by
at most twice that. `depth` is the number of roundings a term goes through on
its way into the result: n - 1 additions plus the products and scalings on top.
Near-zero results from cancellation are why these are absolute tolerances
scaled by sum(|terms|), not relative ones.
"""
import numpy as np

U = 2.0 ** -24  # float32 unit roundoff (half of np.finfo(np.float32).eps).


def gamma(depth: int) -> float:
  return depth * U / (1 - depth * U)


def sum_atol(depth: int, abs_terms, evaluations: int = 2) -> float:
  """The largest |difference| of `evaluations` float32 evaluations (2), or of one against the exact value (1).

  abs_terms: sum(|terms|) of each result (an array is reduced to its maximum).
  """
  return evaluations * gamma(depth) * float(np.max(abs_terms))
