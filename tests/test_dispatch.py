"""The automatic choice of `dot_product_attention`, row by row of the table
in `jattn.attention.choose_implementation` (platform and device facts are
passed in, so every platform is tested on this CPU host)."""

import jax
import jax.numpy as jnp
import pytest

import jattn
from jattn import attention

pytestmark = pytest.mark.floor

BIG = 4096
BF16, F16, F32 = jnp.bfloat16, jnp.float16, jnp.float32
H100, A100, V100 = (9, 0), (8, 0), (7, 0)


def choose(platform, dtype=BF16, capability=H100, L=BIG, M=BIG, **facts):
  return attention.choose_implementation(
      L, M, dtype=dtype, platform=platform, compute_capability=capability,
      **facts)


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_dense_when_weights_are_asked_for_or_the_problem_is_small(platform):
  assert choose(platform, return_weights=True) == "dense"
  assert choose(platform, L=256, M=256) == "dense"
  assert choose(platform, L=257, M=256) != "dense"


def test_cpu_takes_blockwise():
  for dtype in (BF16, F16, F32):
    assert choose("cpu", dtype) == "blockwise"


@pytest.mark.parametrize("facts,expected", [
    (dict(), "cudnn"),
    (dict(dtype=F16), "cudnn"),
    (dict(dtype=F32), "blockwise"),                 # cuDNN refuses float32
    (dict(head_dim=128), "cudnn"),
    (dict(head_dim=256), "cudnn"),                  # sm90+: up to 256
    (dict(head_dim=256, capability=A100), "blockwise"),   # sm80: up to 128
    (dict(head_dim=128, capability=A100), "cudnn"),
    (dict(head_dim=80), "cudnn"),                   # a multiple of 8
    (dict(head_dim=84), "blockwise"),
    (dict(head_dim=264), "blockwise"),
    (dict(head_dim=64, value_dim=32), "blockwise"),
    (dict(capability=V100), "blockwise"),           # compute capability < 8
    (dict(capability=None), "blockwise"),           # not an NVIDIA GPU
    (dict(has_mask=True), "blockwise"),
    (dict(has_bias=True), "blockwise"),
    (dict(is_causal=True), "cudnn"),
    (dict(local_window=(127, 0)), "cudnn"),         # looks left only
    (dict(local_window=(8, 8)), "blockwise"),
    (dict(local_window=16), "blockwise"),           # |i - j| < 16: both sides
    (dict(key_valid_len_ndim=0), "cudnn"),          # one length per example
    (dict(key_valid_len_ndim=1), "blockwise"),      # one per query
])
def test_gpu_rows(facts, expected):
  capability = facts.pop("capability", H100)
  assert choose("gpu", capability=capability, **facts) == expected


@pytest.mark.parametrize("facts,expected", [
    (dict(), "splash"),
    (dict(dtype=F32), "splash"),
    (dict(dtype=F16), "blockwise"),
    (dict(head_dim=80), "splash"),
    (dict(head_dim=64, value_dim=32), "blockwise"),
    (dict(has_mask=True), "blockwise"),
    (dict(has_bias=True), "blockwise"),
    (dict(is_causal=True, local_window=(64, 0)), "splash"),
    (dict(local_window=(8, 8)), "splash"),
    (dict(key_valid_len_ndim=0), "splash"),
    (dict(key_valid_len_ndim=1), "blockwise"),
])
def test_tpu_rows(facts, expected):
  assert choose("tpu", **facts) == expected


def test_pallas_is_never_chosen():
  for platform in ("cpu", "gpu", "tpu"):
    for dtype in (BF16, F16, F32):
      assert choose(platform, dtype) != "pallas"


def test_the_facts_default_to_this_host():
  assert attention.device_facts() == ("cpu", None)
  assert attention.choose_implementation(BIG, BIG, dtype=BF16) == "blockwise"


def test_dot_product_attention_passes_the_facts_of_its_inputs():
  # On this CPU host every large call takes blockwise (a custom_vjp).
  q = jax.ShapeDtypeStruct((1024, 2, 64), jnp.bfloat16)
  text = str(jax.make_jaxpr(lambda q: jattn.dot_product_attention(
      q, q, q, is_causal=True))(q))
  assert "custom_vjp" in text
