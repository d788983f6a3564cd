"""Test-wide JAX settings.

* Eight CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8, set
  before JAX is imported and added to any XLA_FLAGS already set), so the
  sharding and ring-attention tests run meshes on one host. Computations
  that are not sharded still run on the first device.
* Rank promotion raises, so the library never relies on implicit broadcasting.
* float64 is enabled so gradient checks and oracle comparisons can run in
  double precision; tests that exercise float32 pass float32 arrays explicitly.
"""

import os

NUM_CPU_DEVICES = 8
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                ""):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, [
      os.environ.get("XLA_FLAGS", ""),
      f"--xla_force_host_platform_device_count={NUM_CPU_DEVICES}"]))

import jax  # noqa: E402  (after XLA_FLAGS)

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
