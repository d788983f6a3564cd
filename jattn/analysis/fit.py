"""Growth exponents: the least-squares slope of log y against log x."""

from __future__ import annotations

import numpy as np


def growth_exponent(xs, ys) -> float:
  """Slope p of log y = p log x + c (y ~ x^p); NaN if fewer than 2 points.

  Args:
    xs, ys: positive numbers of equal length (e.g. n and FLOPs).
  """
  xs = np.asarray(xs, np.float64)
  ys = np.asarray(ys, np.float64)
  keep = (xs > 0) & (ys > 0)
  if keep.sum() < 2:
    return float("nan")
  slope, _ = np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1)
  return float(slope)
