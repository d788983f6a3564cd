"""Test-wide JAX settings.

* Rank promotion raises, so the library never relies on implicit broadcasting.
* float64 is enabled so gradient checks and oracle comparisons can run in
  double precision; tests that exercise float32 pass float32 arrays explicitly.
"""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402


@pytest.fixture
def x32():
  """Run a test in 32-bit mode, as users and the CLI do."""
  old = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", False)
  yield
  jax.config.update("jax_enable_x64", old)
