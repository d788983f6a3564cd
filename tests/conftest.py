"""Test-wide JAX settings.

* Rank promotion raises, so the library never relies on implicit broadcasting.
* float64 is enabled so gradient checks and oracle comparisons can run in
  double precision; tests that exercise float32 pass float32 arrays explicitly.
"""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)
