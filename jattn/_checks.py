"""Input checks at the public boundary.

Every public function checks what a user hands it at trace time (shapes and
dtypes are static under `jax.jit`), and a mistake raises a `ValueError` or
`TypeError` whose message names the argument and says "expected ..., got ...".
Outputs are checked with chex, which catches internal mistakes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def _dtype(x):
  return jnp.result_type(x)


def check_rank(x, name: str, ranks: int | Sequence[int], *,
               example: bool = False) -> None:
  """Raises ValueError unless `x.ndim` is one of `ranks`.

  example: `x` is one example of a per-example function; one axis too many
  reads as a batch, and the message says to vmap."""
  ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
  ndim = len(_shape(x))
  if ndim not in ranks:
    want = " or ".join(str(r) for r in ranks)
    hint = ""
    if example and ndim == max(ranks) + 1:
      hint = " (one example per call: batch with jax.vmap)"
    raise ValueError(f"{name}: expected rank {want}, got rank {ndim} with "
                     f"shape {_shape(x)}{hint}")


def check_shape(x, name: str, expected: Sequence[int | None]) -> None:
  """Raises ValueError unless `x.shape` matches `expected` (None = any)."""
  shape = _shape(x)
  ok = len(shape) == len(expected) and all(
      e is None or e == s for s, e in zip(shape, expected))
  if not ok:
    items = ["*" if e is None else str(e) for e in expected]
    want = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise ValueError(f"{name}: expected shape {want}, got shape {shape}")


def check_floating(x, name: str) -> None:
  """Raises TypeError unless `x` has a floating-point dtype."""
  dtype = _dtype(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating-point dtype, got {dtype}")


def check_integer(x, name: str) -> None:
  """Raises TypeError unless `x` has an integer dtype."""
  dtype = _dtype(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{name}: expected an integer dtype, got {dtype}")


def check_bool(x, name: str) -> None:
  """Raises TypeError unless `x` is boolean (masks: True = may attend)."""
  dtype = _dtype(x)
  if dtype != jnp.bool_:
    raise TypeError(
        f"{name}: expected a boolean array (True = may attend), got dtype "
        f"{dtype}; convert with `{name}.astype(bool)` or build it with "
        "jattn's mask helpers")


def check_broadcastable(x, name: str, target: Sequence[int]) -> None:
  """Raises ValueError unless `x` broadcasts to `target` without growing it."""
  shape = _shape(x)
  target = tuple(target)
  ok = len(shape) <= len(target)
  if ok:
    for s, t in zip(reversed(shape), reversed(target)):
      if s not in (1, t):
        ok = False
        break
  if not ok:
    raise ValueError(
        f"{name}: expected a shape broadcastable to {target}, got {shape}")


def check_positive_int(value, name: str, minimum: int = 1) -> None:
  """Raises TypeError/ValueError unless `value` is a Python int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected a Python int, got {type(value).__name__}")
  if value < minimum:
    raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")


def is_concrete(x) -> bool:
  """True when `x` holds known values (not a tracer inside jit/vmap/grad)."""
  return not isinstance(x, jax.core.Tracer)


def check_nonnegative_values(x, name: str) -> None:
  """Raises ValueError if concrete `x` holds a negative value.

  Under `jax.jit` the values are unknown at trace time; the caller's
  documented fallback (clipping) applies then.
  """
  if is_concrete(x):
    values = np.asarray(x)
    if values.size and values.min() < 0:
      raise ValueError(
          f"{name}: expected values >= 0, got minimum {values.min()}")


def check_params(params, name: str, expected: dict[str, int]) -> None:
  """Checks a params dict holds floating arrays of the expected ranks."""
  if not isinstance(params, dict):
    raise TypeError(
        f"{name}: expected a dict of arrays, got {type(params).__name__}")
  for key, rank in expected.items():
    if key not in params:
      raise ValueError(
          f"{name}: expected key {key!r}, got keys {sorted(params)}")
    check_rank(params[key], f"{name}[{key!r}]", rank)
    check_floating(params[key], f"{name}[{key!r}]")


def check_token_mask(mask, num_tokens: int, name: str = "mask"):
  """Validates a (N,) bool token-validity mask; returns it as an array."""
  check_bool(mask, name)
  check_shape(mask, name, (num_tokens,))
  return jnp.asarray(mask)


def check_optional_positive_int(value, name: str, minimum: int = 1) -> None:
  """`check_positive_int` unless `value` is None."""
  if value is not None:
    check_positive_int(value, name, minimum)


def check_static_bool(value, name: str) -> bool:
  """Returns a Python bool; raises TypeError for anything else.

  Flags such as `is_causal` choose the computation, so they must be known at
  trace time: a string ('False' is truthy) or a traced value is refused.
  """
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
        f"{name}: expected a Python bool known at trace time (mark it static "
        "under jax.jit, e.g. static_argnames or functools.partial), got a "
        "traced value")
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__} "
                    f"{value!r}")
  return bool(value)


def check_window(window, name: str = "local_window") -> tuple[int, int]:
  """A local window as (left, right): query i sees i - left <= j <= i + right.

  `window` is an int w >= 1 (|j - i| < w, i.e. left = right = w - 1) or a
  pair (left, right) of ints >= 0 (jax's `local_window_size` convention).
  """
  if isinstance(window, (tuple, list)):
    if len(window) != 2:
      raise ValueError(
          f"{name}: expected an int >= 1 or a pair (left, right) of ints "
          f">= 0, got {window!r}")
    left, right = window
    check_positive_int(left, f"{name}[0] (left)", minimum=0)
    check_positive_int(right, f"{name}[1] (right)", minimum=0)
    return int(left), int(right)
  check_positive_int(window, name, minimum=1)
  return int(window) - 1, int(window) - 1


def check_scale(scale, name: str = "scale") -> None:
  """Raises unless `scale` is None or one real number (a scalar)."""
  if scale is None:
    return
  if np.ndim(scale) != 0:
    raise ValueError(
        f"{name}: expected a scalar logit scale, got shape {_shape(scale)}")
  if not jnp.issubdtype(_dtype(scale), jnp.number) or jnp.issubdtype(
      _dtype(scale), jnp.complexfloating):
    raise TypeError(f"{name}: expected a real number, got {_dtype(scale)}")


def check_lengths(key_valid_len, query_valid_len, L: int) -> None:
  """Key lengths: integer, scalar or (L,) (one per query); query length:
  integer scalar; both >= 0 when their values are known."""
  if key_valid_len is not None:
    check_integer(key_valid_len, "key_valid_len")
    check_rank(key_valid_len, "key_valid_len", (0, 1))
    if np.ndim(key_valid_len) == 1:
      check_shape(key_valid_len, "key_valid_len", (L,))
    check_nonnegative_values(key_valid_len, "key_valid_len")
  if query_valid_len is not None:
    check_integer(query_valid_len, "query_valid_len")
    check_rank(query_valid_len, "query_valid_len", 0)
    check_nonnegative_values(query_valid_len, "query_valid_len")


def reject_unsupported(core: str, **arguments) -> None:
  """Raises ValueError naming the first argument that is not None (or True):
  the arguments a core cannot honour. Silently dropping one would change
  the result."""
  for name, value in arguments.items():
    if value is not None and value is not False:
      got = (f"an array of shape {_shape(value)}" if np.ndim(value)
             else repr(value))
      raise ValueError(
          f"{name}: expected None for {core} attention (it cannot express "
          f"it; use jattn.dot_product_attention), got {got}")


class AttentionInputs(NamedTuple):
  """Validated arguments of an attention core, in the multi-head form.

  q (L, H, K), k (M, G, K), v (M, G, V); mask/bias None or broadcastable to
  (H, L, M) (a leading axis added to the single-head form); scale a Python
  float or scalar array; window None or (left, right).
  """
  q: Any
  k: Any
  v: Any
  mask: Any
  bias: Any
  scale: Any
  is_causal: bool
  window: tuple[int, int] | None
  key_valid_len: Any
  query_valid_len: Any
  single_head: bool
  L: int
  M: int
  H: int
  G: int
  K: int
  V: int

  def output(self, out_LHV):
    """out (L, H, V) -> q's dtype, the caller's form ((L, V) single-head)."""
    out = out_LHV.astype(self.q.dtype)
    if self.single_head:
      out = out[:, 0]
    chex.assert_shape(out, (self.L, self.V) if self.single_head
                      else (self.L, self.H, self.V))
    return out


def check_qkv(q, k, v, names=("q", "k", "v")):
  """Validates single- or multi-head q, k, v; returns (L, M, H, G, K, V)."""
  nq, nk, nv = names
  for name, x in zip(names, (q, k, v)):
    check_floating(x, name)
  check_rank(q, nq, (2, 3), example=True)
  rank = len(_shape(q))
  check_rank(k, nk, rank)
  check_rank(v, nv, rank)
  if rank == 2:
    (L, K), (M, Kk), (Mv, V) = _shape(q), _shape(k), _shape(v)
    H = G = Gv = 1
  else:
    (L, H, K), (M, G, Kk), (Mv, Gv, V) = _shape(q), _shape(k), _shape(v)
  if K == 0:
    raise ValueError(f"{nq}: expected a head width K >= 1, got shape "
                     f"{_shape(q)}")
  if Kk != K:
    raise ValueError(
        f"{nk}: expected head width K={K} (the last axis of {nq}), got {Kk} "
        f"({nq} shape {_shape(q)}, {nk} shape {_shape(k)})")
  if Mv != M:
    raise ValueError(
        f"{nv}: expected M={M} keys/values (the first axis of {nk}), got {Mv} "
        f"({nk} shape {_shape(k)}, {nv} shape {_shape(v)})")
  if Gv != G:
    raise ValueError(
        f"{nv}: expected G={G} key/value heads (axis 1 of {nk}), got {Gv}")
  if G == 0 or H % G:
    raise ValueError(
        f"{nq}: expected a number of query heads H that is a multiple of the "
        f"number of key/value heads G={G}, got H={H}")
  return L, M, H, G, K, V


def attention_inputs(q, k, v, mask=None, *, bias=None, scale=None,
                     is_causal=False, local_window=None, key_valid_len=None,
                     query_valid_len=None) -> AttentionInputs:
  """Checks the arguments every attention core takes (see
  `jattn.attention`); returns them in the multi-head form."""
  q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
  L, M, H, G, K, V = check_qkv(q, k, v)
  single_head = q.ndim == 2
  logits_shape = (L, M) if single_head else (H, L, M)
  if mask is not None:
    if isinstance(mask, (list, tuple)):
      raise TypeError(
          "mask: expected a boolean array (True = may attend), got a Python "
          f"{type(mask).__name__}; wrap it in jnp.asarray(..., bool)")
    check_bool(mask, "mask")
    check_broadcastable(mask, "mask", logits_shape)
    mask = jnp.asarray(mask)
  if bias is not None:
    check_floating(bias, "bias")
    check_broadcastable(bias, "bias", logits_shape)
    bias = jnp.asarray(bias)
  check_scale(scale)
  if scale is None:
    scale = 1.0 / math.sqrt(K)
  is_causal = check_static_bool(is_causal, "is_causal")
  window = None if local_window is None else check_window(local_window)
  check_lengths(key_valid_len, query_valid_len, L)
  if single_head:
    q, k, v = q[:, None, :], k[:, None, :], v[:, None, :]
    mask = None if mask is None else mask[None]
    bias = None if bias is None else bias[None]
  return AttentionInputs(q, k, v, mask, bias, scale, is_causal, window,
                         key_valid_len, query_valid_len, single_head,
                         L, M, H, G, K, V)


_ATTENTION_WEIGHT_RANKS = {"w_q": 3, "w_k": 3, "w_v": 3, "w_o": 3}
_ATTENTION_BIAS_NAMES = ("b_q", "b_k", "b_v", "b_o")


def check_attention_params(params, *, self_attention: bool = False):
  """Validates multi-head attention params; returns (Dq, Dkv, H, G, K, V,
  Do). Layout: w_q (Dq, H, K), w_k (Dkv, G, K), w_v (Dkv, G, V),
  w_o (H, V, Do), optional b_q (H, K), b_k (G, K), b_v (G, V), b_o (Do,).
  With `self_attention`, keys come from the queries' input: Dkv == Dq."""
  check_params(params, "params", _ATTENTION_WEIGHT_RANKS)
  Dq, H, K = _shape(params["w_q"])
  Dkv, G, _ = _shape(params["w_k"])
  V = _shape(params["w_v"])[2]
  Do = _shape(params["w_o"])[2]
  expected = {
      "w_k": (Dkv, G, K), "w_v": (Dkv, G, V), "w_o": (H, V, Do),
      "b_q": (H, K), "b_k": (G, K), "b_v": (G, V), "b_o": (Do,),
  }
  for name, shape in expected.items():
    if name in params:
      check_shape(params[name], f"params[{name!r}]", shape)
      check_floating(params[name], f"params[{name!r}]")
  present = [b for b in _ATTENTION_BIAS_NAMES if b in params]
  if present and len(present) != len(_ATTENTION_BIAS_NAMES):
    raise ValueError(
        f"params: expected all or none of {list(_ATTENTION_BIAS_NAMES)}, got "
        f"{present}")
  if G == 0 or H % G:
    raise ValueError(
        f"params['w_k']: expected a number of key/value heads dividing "
        f"H={H}, got G={G}")
  if self_attention and Dkv != Dq:
    raise ValueError(
        f"params['w_k']: expected input width {Dq} (that of params['w_q']; "
        f"self-attention: keys come from the same tokens), got {Dkv}")
  return Dq, Dkv, H, G, K, V, Do


def check_tokens(x, name: str, width: int):
  """Validates floating (N, width) tokens; returns them as an array."""
  x = jnp.asarray(x)
  check_rank(x, name, 2, example=True)
  check_floating(x, name)
  check_shape(x, name, (None, width))
  return x


def check_prng_key(key, name: str = "key") -> None:
  """Raises TypeError unless `key` is a PRNG key: a typed key
  (`jax.random.key(seed)`) or a raw uint32 (2,) key
  (`jax.random.PRNGKey(seed)`)."""
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype,
                                                 jax.dtypes.prng_key):
    return
  if dtype is not None and dtype == jnp.uint32 and _shape(key)[-1:] == (2,):
    return
  got = (f"{type(key).__name__} {key!r}" if dtype is None
         else f"an array of dtype {dtype} and shape {_shape(key)}")
  raise TypeError(
      f"{name}: expected a PRNG key such as jax.random.key(0), got {got}")
