"""The Pallas attention kernel (interpret mode on CPU) against float64 oracles."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
import pytest

import jattn
from jattn.attention import pallas as pallas_attention
from tests.test_blockwise import allowed_pairs
from tests.test_blockwise import attention_vjp_oracle
from tests.test_blockwise import run_vjp
from tests import helpers

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor


class PallasOracleTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("gqa_plain", dict()),
      ("causal_key_len", dict(causal=True, key_valid_len=True)),
      ("window_query_len", dict(window=(6, 2), query_valid_len=20)),
  )
  def test_matches_oracle(self, case):
    L, M, H, G, K, V = 27, 35, 4, 2, 8, 8   # not multiples of the 16 tiles
    rng = np.random.default_rng(len(case))
    q, k, v = (rng.normal(size=s).astype(np.float32)
               for s in [(L, H, K), (M, G, K), (M, G, V)])
    d_out = rng.normal(size=(L, H, V)).astype(np.float32)
    key_len = None
    if case.get("key_valid_len"):
      key_len = rng.integers(1, M, size=(L,)).astype(np.int32)
      key_len[0] = 0                               # nothing to attend to
    kwargs = dict(is_causal=case.get("causal", False),
                  local_window=case.get("window"), key_valid_len=key_len,
                  query_valid_len=case.get("query_valid_len"))
    fn = lambda q, k, v, b: jattn.dot_product_attention(
        q, k, v, implementation="pallas", block_q=16, block_k=16, **kwargs)
    out, grads = run_vjp(fn, q, k, v, d_out)
    allowed = allowed_pairs(H, L, M, causal=kwargs["is_causal"],
                            window=kwargs["local_window"], key_valid_len=key_len,
                            query_valid_len=kwargs["query_valid_len"])
    expected = attention_vjp_oracle(q, k, v, allowed, None, 1 / math.sqrt(K),
                                    d_out)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads[:3]),
                               expected[:4]):
      self.assertLess(helpers.max_rel_error(got, want), 1e-5, name)
    empty = ~allowed.any(axis=2).T
    np.testing.assert_array_equal(np.asarray(out)[empty], 0.0)
    self.assertTrue(np.all(np.isfinite(np.asarray(grads[0]))))

  def test_vmap_and_single_head(self):
    rng = np.random.default_rng(3)
    q = jnp.asarray(rng.normal(size=(2, 20, 8)), jnp.float32)
    fn = lambda impl: jax.jit(jax.vmap(lambda x: jattn.dot_product_attention(
        x, x, x, is_causal=True, implementation=impl)))
    np.testing.assert_allclose(fn("pallas")(q), fn("dense")(q), rtol=1e-5,
                               atol=1e-6)


class PallasPlanTest(parameterized.TestCase):

  def test_power_of_two_tiles(self):
    plan = pallas_attention.make_plan(27, 300, block_q=128, block_k=64)
    self.assertEqual((plan.block_q, plan.block_k), (32, 64))
    self.assertEqual((plan.padded_queries, plan.padded_keys), (32, 320))
    plan = pallas_attention.make_plan(5, 5)
    self.assertEqual((plan.block_q, plan.block_k), (16, 16))

  def test_mask_and_bias_arrays_are_refused_by_name(self):
    x = jnp.ones((4, 1, 8))
    for name, value in (("mask", jnp.ones((4, 4), bool)),
                        ("bias", jnp.ones((4, 4)))):
      with self.assertRaisesRegex(ValueError, f"^{name}: expected None"):
        pallas_attention.attention(x, x, x, **{name: value})


if __name__ == "__main__":
  import absl.testing.absltest
  absl.testing.absltest.main()
