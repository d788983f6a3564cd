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


@pytest.fixture
def fake_cudnn(monkeypatch):
  """Lets `jax.nn.dot_product_attention(implementation="cudnn")` trace and
  lower for "cuda" on this CPU host: jax checks the cuDNN version and the
  GPU's compute capability at trace time, and finds neither. Stubs them as
  cuDNN 9.10 on an sm_90 (H100/H200) GPU; yields the stubbed module."""
  from jax._src.cudnn import fused_attention_stablehlo as fused  # pylint: disable=g-import-not-at-top

  capability = (9, 0)
  as_tuple = lambda text: tuple(int(part) for part in text.split("."))
  monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
  monkeypatch.setattr(fused, "check_compute_capability",
                      lambda cap: capability >= as_tuple(cap))
  if hasattr(fused, "is_cuda_compute_capability_equal"):
    monkeypatch.setattr(fused, "is_cuda_compute_capability_equal",
                        lambda cap: capability == as_tuple(cap))
  yield fused
