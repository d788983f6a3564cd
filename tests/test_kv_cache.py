"""Tests for jattn.kv_cache: cached decoding equals full causal attention."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from tests import helpers

N = 6        # tokens in a test sequence
D = 8        # model width
H = 4        # query heads
MAX_LEN = 8  # cache capacity (> N, so unused rows stay visible to the tests)
TOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}


def _params(seed, *, gqa=False, bias=False, dtype=jnp.float32):
  """Random self-attention params in the layout of `init_self_attention`.

  Drawn with NumPy (eager jax.random initialisers cost seconds of compiling);
  biases are random too, so they matter to the outputs.
  """
  rng = np.random.default_rng(seed)
  G = 2 if gqa else H
  K = D // H
  shapes = {"w_q": (D, H, K), "w_k": (D, G, K), "w_v": (D, G, K),
            "w_o": (H, K, D)}
  if bias:
    shapes |= {"b_q": (H, K), "b_k": (G, K), "b_v": (G, K), "b_o": (D,)}
  return {name: jnp.asarray(rng.normal(size=shape) / np.sqrt(D), dtype)
          for name, shape in shapes.items()}


def _tokens(seed, n=N, dtype=jnp.float32):
  """NumPy tokens: slicing them costs no eager JAX compilation."""
  rng = np.random.default_rng(100 + seed)
  return rng.normal(size=(n, D)).astype(dtype)




# ---------------------------------------------------------------------------
# Float64 NumPy oracle, written without jattn.


def _rope_oracle(x, base=10000.0):
  """Rotates feature pairs (2i, 2i+1) of row t by t * base^(-2i/K)."""
  out = np.array(x, np.float64)
  K = x.shape[-1]
  for t in range(x.shape[0]):
    for i in range(K // 2):
      theta = t * base ** (-2.0 * i / K)
      a, b = x[t, :, 2 * i], x[t, :, 2 * i + 1]
      out[t, :, 2 * i] = a * np.cos(theta) - b * np.sin(theta)
      out[t, :, 2 * i + 1] = a * np.sin(theta) + b * np.cos(theta)
  return out


def _oracle(params, x, rope):
  """Causal multi-head (grouped-query) self-attention in float64.

  Returns (y (n, D), k (n, G, K), v (n, G, V)), k rotated if `rope`.
  """
  p = {name: np.asarray(w, np.float64) for name, w in params.items()}
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  q = np.einsum("nd,dhk->nhk", x, p["w_q"])
  k = np.einsum("nd,dgk->ngk", x, p["w_k"])
  v = np.einsum("nd,dgv->ngv", x, p["w_v"])
  if "b_q" in p:
    q, k, v = q + p["b_q"], k + p["b_k"], v + p["b_v"]
  if rope:
    q, k = _rope_oracle(q), _rope_oracle(k)
  num_heads, head_dim = q.shape[1], q.shape[2]
  per_group = num_heads // k.shape[1]
  y = np.zeros((n, p["w_o"].shape[2]))
  for i in range(n):
    for h in range(num_heads):
      g = h // per_group
      logits = np.array([q[i, h] @ k[j, g] for j in range(i + 1)])
      logits /= np.sqrt(head_dim)
      weights = np.exp(logits - logits.max())
      weights /= weights.sum()
      head_out = sum(weights[j] * v[j, g] for j in range(i + 1))
      y[i] += head_out @ p["w_o"][h]
  if "b_o" in p:
    y += p["b_o"]
  return y, k, v


# ---------------------------------------------------------------------------
# Prefill + decode equals full causal attention at every step.
#
# Compilations dominate the run time, so every test jits through the same two
# functions and reuses shapes where it can.


@functools.partial(jax.jit, static_argnames=("rope",))
def _jit_step(params, x_LD, cache, rope):
  return jattn.cached_self_attention(params, x_LD, cache, rope=rope,
                                     return_weights=True)


@functools.partial(jax.jit, static_argnames=("rope",))
def _jit_full(params, x_ND, rope):
  positions = jnp.arange(x_ND.shape[0]) if rope else None
  return jattn.self_attention(params, x_ND, is_causal=True,
                              positions=positions, return_weights=True)


# (gqa, rope, bias): every pair of settings occurs in float32; float64 runs
# the two extremes.
CONFIGS = [
    (False, False, False, jnp.float32),
    (False, True, True, jnp.float32),
    (True, False, True, jnp.float32),
    (True, True, False, jnp.float32),
    (False, False, False, jnp.float64),
    (True, True, True, jnp.float64),
]


@pytest.mark.parametrize("gqa,rope,bias,dtype", CONFIGS)
def test_prefill_then_decode_equals_full_attention(gqa, rope, bias, dtype):
  params = _params(0, gqa=gqa, bias=bias, dtype=dtype)
  x = _tokens(0, dtype=dtype)
  y_oracle, k_oracle, v_oracle = _oracle(params, x, rope)
  # Causal attention: row t over the whole sequence is row t over x[:t + 1].
  y_full, weights_full = map(np.asarray, _jit_full(params, x, rope))
  tol = TOL[dtype]
  assert helpers.max_rel_error(y_full, y_oracle) < tol  # the reference itself is right
  for prompt_len in (1, 3, N - 1):
    cache = jattn.init_kv_cache(params, MAX_LEN)
    y, weights, cache = _jit_step(params, x[:prompt_len], cache, rope)
    assert y.dtype == dtype
    weights = np.asarray(weights)
    assert helpers.max_rel_error(y, y_full[:prompt_len]) < tol
    assert helpers.max_rel_error(y, y_oracle[:prompt_len]) < tol
    chex.assert_shape(weights, (H, prompt_len, MAX_LEN))
    np.testing.assert_allclose(weights[:, :, :N],
                               weights_full[:, :prompt_len], atol=tol)
    np.testing.assert_array_equal(weights[:, :, N:], 0.0)
    for t in range(prompt_len, N):
      y_1D, weights, cache = _jit_step(params, x[t:t + 1], cache, rope)
      weights = np.asarray(weights)
      assert int(cache["length"]) == t + 1
      assert helpers.max_rel_error(y_1D, y_full[t:t + 1]) < tol, (prompt_len, t)
      assert helpers.max_rel_error(y_1D, y_oracle[t:t + 1]) < tol, (prompt_len, t)
      np.testing.assert_allclose(weights[:, 0, :N], weights_full[:, t],
                                 atol=tol)
    # The cache holds the (rotated) key and value projections, zeros after.
    assert cache["k"].dtype == dtype and cache["v"].dtype == dtype
    k, v = np.asarray(cache["k"]), np.asarray(cache["v"])
    assert helpers.max_rel_error(k[:N], k_oracle) < tol
    assert helpers.max_rel_error(v[:N], v_oracle) < tol
    np.testing.assert_array_equal(k[N:], 0.0)
    np.testing.assert_array_equal(v[N:], 0.0)


class CachedDecodingVariantsTest(chex.TestCase):
  """Prefill and a decode step, eager (concrete length) and jitted (traced)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_oracle(self):
    params = _params(1, gqa=True, bias=True, dtype=jnp.float64)
    x = _tokens(1, n=2, dtype=jnp.float64)
    y_oracle, _, _ = _oracle(params, x, rope=True)
    attend = self.variant(
        functools.partial(jattn.cached_self_attention, rope=True))
    cache = jattn.init_kv_cache(params, 3)
    # Equal shapes in both calls keep the eager variant's compilations few.
    y_first, cache = attend(params, x[:1], cache)
    y_second, cache = attend(params, x[1:], cache)
    np.testing.assert_allclose(y_first, y_oracle[:1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_second, y_oracle[1:], rtol=1e-12, atol=1e-12)
    chex.assert_shape(y_second, (1, D))
    self.assertEqual(int(cache["length"]), 2)
    chex.assert_type(cache["length"], jnp.int32)


def test_jitted_decode_step_does_not_retrace():
  params = _params(2, gqa=True, bias=True)
  x = _tokens(2)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, x_1D, cache):
    return jattn.cached_self_attention(params, x_1D, cache, rope=True)

  cache = jattn.init_kv_cache(params, MAX_LEN)
  outputs = []
  for t in range(N):  # prefill of length 1, then decode steps
    y_1D, cache = step(params, x[t:t + 1], cache)
    outputs.append(y_1D)
  assert int(cache["length"]) == N
  y_oracle, _, _ = _oracle(params, x, rope=True)
  assert helpers.max_rel_error(jnp.concatenate(outputs), y_oracle) < 1e-5


def test_vmap_over_caches_of_different_lengths_equals_loop():
  params = _params(0)  # the shapes of CONFIGS[0]: the jitted steps are reused
  xs = [_tokens(3), _tokens(4)]
  prompt_lens = (1, 3)
  caches = []
  for x, prompt_len in zip(xs, prompt_lens):
    cache = jattn.init_kv_cache(params, MAX_LEN)
    _, _, cache = _jit_step(params, x[:prompt_len], cache, False)
    caches.append(cache)
  cache_B = jax.tree.map(lambda *leaves: jnp.stack(leaves), *caches)
  x_B1D = jnp.stack([x[p:p + 1] for x, p in zip(xs, prompt_lens)])
  step_B = jax.jit(jax.vmap(jattn.cached_self_attention, in_axes=(None, 0, 0)))
  y_B1D, new_cache_B = step_B(params, x_B1D, cache_B)
  np.testing.assert_array_equal(new_cache_B["length"], [2, 4])
  for b, (x, p) in enumerate(zip(xs, prompt_lens)):
    y_1D, _, new_cache = _jit_step(params, x[p:p + 1], caches[b], False)
    np.testing.assert_allclose(y_B1D[b], y_1D, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_cache_B["k"][b], new_cache["k"],
                               rtol=1e-6, atol=1e-6)
    y_full, _ = _jit_full(params, x, False)
    assert helpers.max_rel_error(y_B1D[b], y_full[p:p + 1]) < 1e-5


def test_gradients_of_a_decode_step():
  params = _params(5, gqa=True, bias=True, dtype=jnp.float64)
  x = _tokens(5, n=3, dtype=jnp.float64)
  rng = np.random.default_rng(5)
  k_MGK = np.zeros((4, 2, D // H))
  k_MGK[:2] = rng.normal(size=(2, 2, D // H))  # two cached tokens
  v_MGV = np.zeros((4, 2, D // H))
  v_MGV[:2] = rng.normal(size=(2, 2, D // H))

  @jax.jit
  def step(x_1D, k_MGK, v_MGV):
    cache = {"k": k_MGK, "v": v_MGV, "length": jnp.asarray(2, jnp.int32)}
    return jattn.cached_self_attention(params, x_1D, cache, rope=True)[0]

  # Gradients reach the new token and the cached keys and values.
  jax.test_util.check_grads(step, (x[2:], k_MGK, v_MGV), order=1,
                            modes=("rev",))


def test_empty_input_leaves_cache_unchanged():
  params = _params(6)
  cache = jattn.init_kv_cache(params, MAX_LEN)
  cache["length"] = jnp.asarray(2, jnp.int32)
  y, weights, new_cache = jattn.cached_self_attention(
      params, jnp.zeros((0, D), jnp.float32), cache, return_weights=True)
  chex.assert_shape([y, weights], [(0, D), (H, 0, MAX_LEN)])
  assert int(new_cache["length"]) == 2
  assert new_cache["k"] is cache["k"] and new_cache["v"] is cache["v"]


# ---------------------------------------------------------------------------
# init_kv_cache.


def test_init_kv_cache_shapes_and_dtypes():
  params = _params(7, gqa=True)
  cache = jattn.init_kv_cache(params, 5)
  chex.assert_shape(cache["k"], (5, 2, D // H))
  chex.assert_shape(cache["v"], (5, 2, D // H))
  chex.assert_type([cache["k"], cache["v"], cache["length"]],
                   [jnp.float32, jnp.float32, jnp.int32])
  assert cache["length"].shape == ()
  np.testing.assert_array_equal(cache["k"], 0.0)
  np.testing.assert_array_equal(cache["v"], 0.0)
  cache = jattn.init_kv_cache(_params(7, dtype=jnp.float64), 5)
  chex.assert_type([cache["k"], cache["v"]], [jnp.float64, jnp.float64])


def test_cache_dtype_is_kept():
  params = _params(0)
  cache = jattn.init_kv_cache(params, MAX_LEN, dtype=jnp.bfloat16)
  x = _tokens(8)
  y, _, cache = _jit_step(params, x, cache, False)
  assert cache["k"].dtype == jnp.bfloat16 and cache["v"].dtype == jnp.bfloat16
  assert y.dtype == jnp.float32
  # Keys/values rounded to bfloat16 (8 bits of mantissa): still close.
  y_full, _ = _jit_full(params, x, False)
  assert helpers.max_rel_error(y, y_full) < 3e-2


# ---------------------------------------------------------------------------
# Errors.


def _cache_at(params, length, max_len=MAX_LEN):
  cache = jattn.init_kv_cache(params, max_len)
  cache["length"] = jnp.asarray(length, jnp.int32)
  return cache


def test_overflow_raises_when_length_is_concrete():
  params = _params(9)
  x = _tokens(9)
  with pytest.raises(ValueError, match=r"x_LD: expected at most max_len=4"):
    jattn.cached_self_attention(params, x[:5], _cache_at(params, 0, 4))
  with pytest.raises(ValueError,
                     match=r"x_LD: .*at most 1 new.*cache\['length'\]=3"):
    jattn.cached_self_attention(params, x[:2], _cache_at(params, 3, 4))
  with pytest.raises(ValueError, match=r"x_LD: .*at most 0 new tokens"):
    jattn.cached_self_attention(params, x[:1], _cache_at(params, 4, 4))
  with pytest.raises(ValueError, match=r"cache\['length'\]: expected a value"):
    jattn.cached_self_attention(params, x[:1], _cache_at(params, -1, 4))


def test_overflow_under_jit_gives_nan():
  params = _params(0)  # shapes of CONFIGS[0]: reuses the compiled L = 3 step
  x = _tokens(10)
  y, weights, new_cache = _jit_step(params, x[:3], _cache_at(params, 6), False)
  assert np.all(np.isnan(y)) and np.all(np.isnan(weights))
  assert int(new_cache["length"]) == 9  # > max_len: the caller can test it
  y, _, new_cache = _jit_step(params, x[:3], _cache_at(params, 5), False)
  assert not np.any(np.isnan(y))  # exactly fills the cache
  assert int(new_cache["length"]) == MAX_LEN


@pytest.mark.parametrize("x,error,match", [
    (np.zeros((D,), np.float32), ValueError, r"x_LD: expected rank 2"),
    (np.zeros((2, D + 1), np.float32), ValueError,
     rf"x_LD: expected shape \(\*, {D}\)"),
    (np.zeros((2, D), np.int32), TypeError, r"x_LD: expected a floating"),
])
def test_bad_tokens(x, error, match):
  params = _params(12)
  cache = jattn.init_kv_cache(params, MAX_LEN)
  with pytest.raises(error, match=match):
    jattn.cached_self_attention(params, x, cache)


def _bad_caches():
  good = jattn.init_kv_cache(_params(13), MAX_LEN)
  return [
      ([1, 2, 3], TypeError, r"cache: expected a dict"),
      ({"k": good["k"], "v": good["v"]}, ValueError,
       r"cache: expected keys \['k', 'v', 'length'\]"),
      (jattn.init_kv_cache(_params(13, gqa=True), MAX_LEN), ValueError,
       r"cache\['k'\]: expected shape \(8, 4, 2\), got shape \(8, 2, 2\)"),
      (good | {"v": good["v"][:5]}, ValueError,
       r"cache\['v'\]: expected shape \(8, 4, 2\)"),
      (good | {"k": good["k"][0]}, ValueError,
       r"cache\['k'\]: expected rank 3"),
      (good | {"k": good["k"].astype(jnp.int32)}, TypeError,
       r"cache\['k'\]: expected a floating"),
      (good | {"length": jnp.zeros((1,), jnp.int32)}, ValueError,
       r"cache\['length'\]: expected rank 0"),
      (good | {"length": jnp.zeros((), jnp.float32)}, TypeError,
       r"cache\['length'\]: expected an integer"),
  ]


def test_bad_cache():
  params, x = _params(13), _tokens(13, n=1)
  for cache, error, match in _bad_caches():
    with pytest.raises(error, match=match):
      jattn.cached_self_attention(params, x, cache)


def test_bad_flags_and_params():
  params = _params(14)
  cache = jattn.init_kv_cache(params, MAX_LEN)
  x = _tokens(14, n=1)
  with pytest.raises(TypeError, match=r"rope: expected a Python bool"):
    jattn.cached_self_attention(params, x, cache, rope=jnp.asarray(True))
  with pytest.raises(TypeError, match=r"return_weights: expected a Python"):
    jattn.cached_self_attention(params, x, cache, return_weights=None)
  wide = r"params\['w_k'\]: expected input width"
  cross = params | {"w_k": jnp.zeros((6, H, D // H)),
                    "w_v": jnp.zeros((6, H, D // H))}
  with pytest.raises(ValueError, match=wide):
    jattn.init_kv_cache(cross, MAX_LEN)
  with pytest.raises(ValueError, match=wide):
    jattn.cached_self_attention(cross, x, cache)
  with pytest.raises(ValueError, match=r"params\['w_o'\]: expected shape"):
    jattn.cached_self_attention(params | {"w_o": params["w_o"][:2]}, x, cache)


@pytest.mark.parametrize("max_len,dtype,error,match", [
    (0, None, ValueError, r"max_len: expected an int >= 1, got 0"),
    (4.0, None, TypeError, r"max_len: expected a Python int"),
    (4, jnp.int32, TypeError, r"dtype: expected a floating-point dtype"),
])
def test_bad_init_arguments(max_len, dtype, error, match):
  with pytest.raises(error, match=match):
    jattn.init_kv_cache(_params(15), max_len, dtype=dtype)


def test_long_prefill_takes_the_automatic_dispatch_without_weights():
  # 512 new tokens over a 512-row cache: past the dense size, so the
  # structured mask (per-query key lengths) goes to the blockwise path and
  # no (H, L, M) array is formed unless the weights are asked for.
  params = jattn.init_self_attention(jax.random.key(0), 8, 2)
  cache = jattn.init_kv_cache(params, 512)
  x = jax.ShapeDtypeStruct((512, 8), jnp.float32)
  fn = lambda x, w: jattn.cached_self_attention(params, x, cache,
                                                return_weights=w)
  lean = jax.make_jaxpr(lambda x: fn(x, False))(x)
  shapes = {tuple(v.aval.shape) for eqn in lean.jaxpr.eqns
            for v in eqn.outvars}
  assert "custom_vjp" in str(lean)
  assert (2, 512, 512) not in shapes
  full = jax.make_jaxpr(lambda x: fn(x, True))(x)
  assert "custom_vjp" not in str(full)


def test_long_prefill_equals_the_oracle():
  params = _params(5)
  x = _tokens(6, n=300)
  cache = jattn.init_kv_cache(params, 320)
  y, cache = jattn.cached_self_attention(params, x, cache, rope=True)
  y_oracle, _, _ = _oracle(params, x, rope=True)
  assert helpers.max_rel_error(y, y_oracle) < 1e-5
