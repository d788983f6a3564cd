"""Ring attention: exact attention over a sequence sharded across devices.

The sequence axis of q, k and v is split into p equal, contiguous shards
over a mesh axis (default "seq"): device i holds queries and keys/values
i * S ... (i + 1) * S - 1. Each device keeps its queries and passes its
key/value shard around the ring (`jax.lax.ppermute`, device i -> i + 1), so
after p hops every query block has seen every key block; per hop it runs the
blockwise (flash-style) tile loop of `jattn.attention.blockwise` and merges the hop's
(output, log-sum-exp) into a running pair (online softmax across hops). No
device ever holds more than two key/value shards and one tile of logits:
per-device memory is O(n / p) in the sequence length n.

The backward pass is a `jax.custom_vjp` with a second ring pass: the saved
(q, k, v, output, log-sum-exp) give each hop's exact gradients (flash
attention's backward needs only the final statistics), dq accumulates
locally, and the dk/dv partial sums travel with their key/value shard and
arrive home after the last hop.

Masks (the same semantics as `jattn.dot_product_attention`, True = may
attend; a query with nothing to attend to outputs 0 with zero gradients):

* `is_causal`: query i sees keys j <= i (needs equal query and key lengths).
  Hops whose key shard lies entirely in the future are skipped
  (`lax.cond`), so device i computes i + 1 of the p hops: the work is
  unbalanced (the last device does p hops, the first one), and a causal
  ring step takes as long as a non-causal one although it does half the
  arithmetic. A striped or zig-zag layout would balance it; not done here.
* key padding: a boolean mask over keys only, (M,) / (1, M) / (1, 1, M)
  per example; it travels around the ring with its key/value shard.
* `key_valid_len` (scalar or one per query) and `query_valid_len` (scalar).

Not supported (ValueError naming the argument): masks that vary over
queries or heads (use the structured arguments), `bias`, `local_window`.

Lengths that are not multiples of p are padded (padded keys are never
attended to, padded queries are dropped).

Three entry points:

* `ring_attention(q_BLHK, k_BMGK, v_BMGV, ...)`: a batch of globally sharded
  arrays (batch over `batch_axis`, sequence over `seq_axis`, optionally heads
  over `head_axis`); runs its own `shard_map`.
* `ring_dot_product_attention(q_LHK, k_MGK, v_MGV, ...)`: one example, the
  jattn convention; batch it with `jax.vmap(..., spmd_axis_name="data")`.
* `ring_attention_shard(q_LHK, k_MGK, v_MGV, ...)`: one example's local
  shard, for use inside your own `shard_map` over `axis_name`.

`mesh=None` takes the current mesh (`jax.set_mesh(mesh)`, jax >= 0.7).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Hashable

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from jattn import _checks
from jattn import _compat
from jattn import masks as masks_lib
from jattn import softmax as softmax_lib
from jattn.attention import blockwise


@dataclasses.dataclass(frozen=True)
class _Ring:
  """Static description of one ring: the axis, its size and the tile plans
  of the diagonal hop (the device's own keys) and of the other hops."""
  axis_name: Hashable
  size: int
  diag: blockwise.Plan
  off: blockwise.Plan
  causal: bool
  shard_keys: int  # keys per shard, S_k (unpadded)


# ---------------------------------------------------------------------------
# Helpers on the blockwise layout: q (G, Lp, R, K), kT (G, K, Mp),
# v (G, Mp, V), mask (1, 1, 1, Mp) or None, key_len (Lp,) int32 or None
# (counted in global key positions).


def _rotate(ring: _Ring, tree):
  """Sends every leaf to the next device of the ring (i -> i + 1)."""
  if ring.size == 1:
    return tree
  perm = [(i, (i + 1) % ring.size) for i in range(ring.size)]
  return jax.tree.map(lambda x: lax.ppermute(x, ring.axis_name, perm), tree)


def _local_len(ring: _Ring, key_len, src):
  """Key lengths relative to the first key of shard `src`."""
  if key_len is None:
    return None
  return key_len - src.astype(jnp.int32) * ring.shard_keys


def _merge(o, lse, o_t, lse_t):
  """Merges a hop's normalised output and log-sum-exp into the running pair.

  Rows with nothing seen (running, or in this hop) carry
  `blockwise.empty_row_lse`, a finite stand-in for +inf (no infinity is
  formed: `jax.debug_infs` stays quiet); they get weight 0.
  """
  acc = o.dtype
  lse_t = lse_t.astype(acc)
  seen, seen_t = ~blockwise.is_empty_row(lse), ~blockwise.is_empty_row(lse_t)
  # The sentinels replaced by 0 wherever arithmetic touches them.
  lse0, lse_t0 = jnp.where(seen, lse, 0.0), jnp.where(seen_t, lse_t, 0.0)
  new = jnp.where(seen & seen_t, jnp.logaddexp(lse0, lse_t0),
                  jnp.where(seen, lse, lse_t))
  safe = jnp.where(seen | seen_t, new, 0.0)
  w_old = jnp.where(seen, jnp.exp(lse0 - safe), 0.0)[..., None]
  w_new = jnp.where(seen_t, jnp.exp(lse_t0 - safe), 0.0)[..., None]
  return o * w_old + o_t.astype(acc) * w_new, new


def _skip_future(ring: _Ring, t, idx, compute, skip, operand):
  """compute(operand) unless (causal) hop t's keys are all in the future."""
  if not ring.causal:
    return compute(operand)
  return lax.cond(t <= idx, compute, skip, operand)


def _ring_pass(ring: _Ring, kv, carry, hop):
  """carry <- hop(plan, t, kv_t, carry) for hops t = 0 .. p-1, where kv_t is
  the key/value shard of device i - t.

  Each hop sends its shard on before computing on it, so the transfer can
  overlap the arithmetic (the last hop's send is not needed: one extra
  transfer per pass, for one traced hop body). Causal rings trace the
  diagonal hop (t = 0, the device's own keys) separately with the causal
  tile plan; the other hops use the plan without masks.
  """
  first = 0
  if ring.causal:
    nxt = _rotate(ring, kv)
    carry = hop(ring.diag, 0, kv, carry)
    kv, first = nxt, 1
  if first < ring.size:
    def body(t, state):
      kv, carry = state
      return _rotate(ring, kv), hop(ring.off, t, kv, carry)

    _, carry = lax.fori_loop(first, ring.size, body, (kv, carry))
  return carry


def _ring_forward(ring: _Ring, q, kT, v, mask, key_len):
  """(out (G, Lp, R, V) in q's dtype, lse (G, Lp, R);
  `blockwise.empty_row_lse` marks an empty row)."""
  G, Lp, R, _ = q.shape
  V = v.shape[-1]
  acc = softmax_lib.softmax_dtype(q.dtype)
  idx = lax.axis_index(ring.axis_name)
  p = ring.size

  def hop(plan, t, kv, state):
    kT_t, v_t, mask_t = kv
    src = (idx - t) % p

    def compute(state):
      o_t, lse_t = blockwise.forward_core(
          plan, q, kT_t, v_t, None, mask_t, _local_len(ring, key_len, src))
      return _merge(*state, o_t, lse_t)

    if isinstance(t, int) and t == 0:  # its own keys: never skipped
      return compute(state)
    return _skip_future(ring, t, idx, compute, lambda s: s, state)

  state = (jnp.zeros((G, Lp, R, V), acc),
           jnp.full((G, Lp, R), blockwise.empty_row_lse(acc), acc))
  o, lse = _ring_pass(ring, (kT, v, mask), state, hop)
  return o.astype(q.dtype), lse


def _ring_backward(ring: _Ring, res, d_out):
  """Cotangents of (q, kT, v, mask, key_len) by a second ring pass."""
  q, kT, v, mask, key_len, out, lse = res
  acc = softmax_lib.softmax_dtype(q.dtype)
  idx = lax.axis_index(ring.axis_name)
  p = ring.size

  def hop(plan, t, kv, carry):
    kT_t, v_t, mask_t = kv
    src = (idx - t) % p

    def compute(carry):
      dq, dkT, dv = carry
      res_t = (q, kT_t, v_t, None, mask_t, _local_len(ring, key_len, src),
               out, lse)
      # Each hop's cotangents stay in float32 until the last hop is summed.
      dq_t, dkT_t, dv_t, _, _, _ = blockwise.backward_core(
          plan, res_t, d_out, in_float32=True)
      return dq + dq_t, dkT + dkT_t, dv + dv_t

    if isinstance(t, int) and t == 0:  # its own keys: never skipped
      carry = compute(carry)
    else:
      carry = _skip_future(ring, t, idx, compute, lambda c: c, carry)
    dq, dkT, dv = carry
    # The key/value gradients travel with their shard; after the last hop
    # this send brings them home.
    dkT, dv = _rotate(ring, (dkT, dv))
    return dq, dkT, dv

  carry = (jnp.zeros(q.shape, acc), jnp.zeros(kT.shape, acc),
           jnp.zeros(v.shape, acc))
  dq, dkT, dv = _ring_pass(ring, (kT, v, mask), carry, hop)
  return (dq.astype(q.dtype), dkT.astype(kT.dtype), dv.astype(v.dtype), None,
          None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring_core(ring: _Ring, q, kT, v, mask, key_len):
  """Ring attention on one example's local shard, blockwise layout."""
  return _ring_forward(ring, q, kT, v, mask, key_len)[0]


def _ring_core_fwd(ring, q, kT, v, mask, key_len):
  out, lse = _ring_forward(ring, q, kT, v, mask, key_len)
  return out, (q, kT, v, mask, key_len, out, lse)


_ring_core.defvjp(_ring_core_fwd, _ring_backward)


# ---------------------------------------------------------------------------
# Argument checks shared by the entry points.


def _key_padding(mask, M: int, name: str = "mask"):
  """A per-example mask that varies over keys only -> bool (M,), or None."""
  if mask is None:
    return None
  _checks.check_bool(mask, name)
  shape = tuple(np.shape(mask))
  if len(shape) > 3 or any(s != 1 for s in shape[:-1]) or (
      shape and shape[-1] not in (1, M)):
    raise ValueError(
        f"{name}: expected a key-padding mask of shape (M,), (1, M) or "
        f"(1, 1, M) with M={M} (ring attention shards the keys; for masks "
        "that vary over queries use is_causal, key_valid_len or "
        f"query_valid_len), got shape {shape}")
  return jnp.broadcast_to(jnp.asarray(mask).reshape(-1), (M,))


def _unsupported(bias, local_window) -> None:
  if bias is not None:
    raise ValueError(
        "bias: expected None (ring attention does not take a logit bias), "
        f"got an array of shape {np.shape(bias)}")
  if local_window is not None:
    raise ValueError(
        "local_window: expected None (ring attention supports is_causal, "
        "key padding and valid lengths; use jattn.dot_product_attention for "
        f"local windows), got {local_window!r}")


def _check_common(q, k, v, is_causal, key_valid_len, query_valid_len,
                  block_q, block_k):
  L, M, H, G, K, V = _checks.check_qkv(q, k, v)
  _checks.check_static_bool(is_causal, "is_causal")
  if is_causal and L != M:
    raise ValueError(
        f"is_causal: expected as many queries as keys for causal ring "
        f"attention, got L={L} queries and M={M} keys")
  _checks.check_lengths(key_valid_len, query_valid_len, L)
  for name, block in (("block_q", block_q), ("block_k", block_k)):
    if block is not None:
      _checks.check_positive_int(block, name)
  return L, M, H, G, K, V


# ---------------------------------------------------------------------------
# Entry points.


def _zero_unattended_shard(q_LHK, k_MGK, v_MGV, key_mask_M, key_valid_len,
                           query_valid_len, num_keys, axis_name, idx):
  """This shard's q, k, v with the rows nothing uses set to zero:
  `jattn.masks.zero_unattended` with the global limits moved to this
  shard's positions (keys at or past every query's key length over the
  whole ring, `lax.pmax`, or past `num_keys`; queries past
  `query_valid_len`), and the masked-out keys. Padding often holds garbage,
  and 0 * NaN is NaN in the weighted sums."""
  L, M = q_LHK.shape[0], k_MGK.shape[0]
  longest = None
  if key_valid_len is not None:
    longest = lax.pmax(jnp.max(jnp.asarray(key_valid_len)), axis_name)
  if num_keys is not None:
    longest = num_keys if longest is None else jnp.minimum(longest, num_keys)
  q_LHK, k_MGK, v_MGV = masks_lib.zero_unattended(
      q_LHK, k_MGK, v_MGV,
      key_valid_len=None if longest is None else longest - idx * M,
      query_valid_len=(None if query_valid_len is None
                       else jnp.asarray(query_valid_len) - idx * L))
  if key_mask_M is not None:  # a key-only mask: this shard's keys alone
    k_MGK, v_MGV = (jnp.where(key_mask_M[:, None, None], x,
                              jnp.zeros((), x.dtype)) for x in (k_MGK, v_MGV))
  return q_LHK, k_MGK, v_MGV


def ring_attention_shard(q_LHK, k_MGK, v_MGV, key_mask_M=None, *,
                         axis_name: Hashable = "seq", scale=None,
                         is_causal: bool = False, key_valid_len=None,
                         query_valid_len=None, num_keys: int | None = None,
                         precision=None, block_q: int | None = None,
                         block_k: int | None = None):
  """Ring attention of one example's local shard, inside a `shard_map`.

  Call it in a function mapped by `shard_map` over `axis_name` (size p),
  where device i holds queries i * L ... (i + 1) * L - 1 and keys/values
  i * M ... (i + 1) * M - 1 of the example (vmap it for a batch).

  Args:
    q_LHK: (L, H, K) this device's queries; k_MGK: (M, G, K); v_MGV:
      (M, G, V) this device's keys and values (H a multiple of G).
    key_mask_M: optional bool (M,), True = key may be attended to (this
      device's keys; it travels around the ring with them).
    axis_name: the mesh axis the sequence is sharded over.
    scale: logit scale, default 1 / sqrt(K).
    is_causal: global query i sees global keys j <= i (needs L == M).
    key_valid_len: optional integer, scalar or (L,) (this device's queries):
      query i sees global keys j < key_valid_len.
    query_valid_len: optional integer scalar: global queries >= it output 0.
    num_keys: optional Python int, the number of real keys of the example
      (default p * M); later keys (padding) are never attended to.
    precision, block_q, block_k: as in `jattn.dot_product_attention`.

  Returns:
    (L, H, V) in q's dtype: this device's rows of the attention output.
  """
  q_LHK, k_MGK, v_MGV = (jnp.asarray(x) for x in (q_LHK, k_MGK, v_MGV))
  _checks.check_rank(q_LHK, "q_LHK", 3, example=True)
  L, M, H, G, K, V = _check_common(q_LHK, k_MGK, v_MGV, is_causal,
                                   key_valid_len, query_valid_len, block_q,
                                   block_k)
  key_mask_M = _key_padding(key_mask_M, M, "key_mask_M")
  if M == 0:  # no keys on any shard: every query is fully masked
    return jnp.zeros((L, H, V), q_LHK.dtype)
  p = _compat.axis_size(axis_name)
  idx = lax.axis_index(axis_name)
  if num_keys is not None:
    _checks.check_positive_int(num_keys, "num_keys", minimum=0)
  scale = 1.0 / math.sqrt(K) if scale is None else scale

  def plan(causal):
    return blockwise.make_plan(L, M, block_q=block_q, block_k=block_k,
                               causal=causal, precision=precision)

  ring = _Ring(axis_name, p, plan(is_causal), plan(False), is_causal, M)
  R = H // G
  dtype = jnp.result_type(q_LHK, k_MGK)
  acc = softmax_lib.softmax_dtype(dtype)
  out_dtype = q_LHK.dtype
  q_LHK, k_MGK, v_MGV = _zero_unattended_shard(
      q_LHK, k_MGK, v_MGV, key_mask_M, key_valid_len, query_valid_len,
      num_keys, axis_name, idx)
  # The scaled q stays in float32: rounding it to bf16 costs accuracy.
  q_LHK = q_LHK.astype(acc) * jnp.asarray(scale, acc)
  v_MGV = v_MGV.astype(jnp.promote_types(v_MGV.dtype, dtype))
  Lp, Mp = ring.off.padded_queries, ring.off.padded_keys
  q = jnp.pad(q_LHK.reshape(L, G, R, K).transpose(1, 0, 2, 3),
              [(0, 0), (0, Lp - L), (0, 0), (0, 0)])
  kT = jnp.pad(k_MGK.astype(dtype).transpose(1, 2, 0),
               [(0, 0), (0, 0), (0, Mp - M)])
  v = jnp.pad(v_MGV.transpose(1, 0, 2), [(0, 0), (0, Mp - M), (0, 0)])
  mask = None
  if key_mask_M is not None:
    mask = jnp.pad(key_mask_M, (0, Mp - M)).reshape(1, 1, 1, Mp)

  # Key lengths in global positions, one per (padded) query row.
  key_len = None
  if key_valid_len is not None:
    key_len = jnp.broadcast_to(
        jnp.asarray(key_valid_len).astype(jnp.int32).reshape(-1), (L,))
  if num_keys is not None and num_keys < p * M:
    cap = jnp.full((L,), num_keys, jnp.int32)
    key_len = cap if key_len is None else jnp.minimum(key_len, cap)
  if key_len is not None:
    key_len = jnp.pad(key_len, (0, Lp - L))

  out = _ring_core(ring, q, kT, v, mask, key_len)
  out_LHV = out[:, :L].transpose(1, 0, 2, 3).reshape(L, H, V)
  if query_valid_len is not None:
    rows_L = idx * L + jnp.arange(L)
    keep_L = rows_L < jnp.asarray(query_valid_len)
    out_LHV = jnp.where(keep_L[:, None, None], out_LHV,
                        jnp.zeros((), out_LHV.dtype))
  out_LHV = out_LHV.astype(out_dtype)
  chex.assert_shape(out_LHV, (L, H, V))
  return out_LHV


def _mesh_sizes(mesh) -> dict:
  return dict(zip(mesh.axis_names, mesh.axis_sizes))


def resolve_mesh(mesh):
  """`mesh`, or the current one (`jax.set_mesh`); ValueError if none."""
  if mesh is None:
    mesh = _compat.current_mesh()
  if mesh is None:
    raise ValueError(
        "mesh: expected a jax.sharding.Mesh or a current mesh set with "
        "jax.set_mesh(mesh), got None")
  return mesh


def _axis(mesh, axis, name: str, *, required: bool):
  """`axis` if the mesh has it with size > 1, else None."""
  sizes = _mesh_sizes(mesh)
  if axis is None:
    return None
  if axis not in sizes:
    if required:
      raise ValueError(
          f"{name}: expected an axis of the mesh {tuple(sizes)}, got "
          f"{axis!r}")
    return None
  return axis if sizes[axis] > 1 or required else None


def _pad_rows(x, n: int, fill=0):
  if x is None or x.shape[0] == n:
    return x
  pad = [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  return jnp.pad(x, pad, constant_values=fill)


def ring_dot_product_attention(q_LHK, k_MGK, v_MGV, mask=None, *, mesh=None,
                               seq_axis: Hashable = "seq",
                               head_axis: Hashable | None = None, bias=None,
                               scale=None, is_causal: bool = False,
                               local_window=None, key_valid_len=None,
                               query_valid_len=None, precision=None,
                               block_q: int | None = None,
                               block_k: int | None = None):
  """`jattn.dot_product_attention` of one example, sequence-sharded (ring).

  q_LHK (L, H, K), k_MGK (M, G, K), v_MGV (M, G, V) are logical (global)
  arrays; inside, a `shard_map` over `seq_axis` runs `ring_attention_shard`.
  Batch it with `jax.vmap(..., spmd_axis_name=batch_axis)` so that the batch
  stays sharded (a plain vmap replicates the batch inside the shard_map).

  Args:
    q_LHK, k_MGK, v_MGV: as in `jattn.dot_product_attention` (multi-head).
    mask: optional key-padding mask, bool (M,), (1, M) or (1, 1, M); masks
      that vary over queries or heads raise ValueError.
    mesh: the device mesh; None = the current mesh (`jax.set_mesh`).
    seq_axis: the mesh axis the sequence is sharded over.
    head_axis: optional mesh axis for the heads (H and G must be multiples
      of its size); ignored when the mesh lacks it.
    bias, local_window: must be None (not supported).
    scale, is_causal, key_valid_len, query_valid_len, precision, block_q,
      block_k: as in `jattn.dot_product_attention` (is_causal needs L == M).

  Returns:
    (L, H, V) in q's dtype, sharded like q.
  """
  q_LHK, k_MGK, v_MGV = (jnp.asarray(x) for x in (q_LHK, k_MGK, v_MGV))
  _checks.check_rank(q_LHK, "q_LHK", 3, example=True)
  _unsupported(bias, local_window)
  L, M, H, G, K, V = _check_common(q_LHK, k_MGK, v_MGV, is_causal,
                                   key_valid_len, query_valid_len, block_q,
                                   block_k)
  key_mask_M = _key_padding(mask, M)
  mesh = resolve_mesh(mesh)
  seq_axis = _axis(mesh, seq_axis, "seq_axis", required=True)
  if M == 0:
    # No keys: every query is fully masked, so its output is 0 (with zero
    # gradients), as for every other implementation.
    return jnp.zeros((L, H, V), q_LHK.dtype)
  head_axis = _axis(mesh, head_axis, "head_axis", required=False)
  sizes = _mesh_sizes(mesh)
  p = sizes[seq_axis]
  if head_axis is not None and (H % sizes[head_axis] or
                                G % sizes[head_axis]):
    raise ValueError(
        f"head_axis: expected a mesh axis whose size divides H={H} and G={G}, "
        f"got {head_axis!r} of size {sizes[head_axis]}")

  Lp, Mp = -(-L // p) * p, -(-M // p) * p
  args = {"q": _pad_rows(q_LHK, Lp), "k": _pad_rows(k_MGK, Mp),
          "v": _pad_rows(v_MGV, Mp)}
  specs = {"q": P(seq_axis, head_axis, None), "k": P(seq_axis, head_axis, None),
           "v": P(seq_axis, head_axis, None)}
  if key_mask_M is not None:
    args["key_mask"], specs["key_mask"] = _pad_rows(key_mask_M, Mp,
                                                    False), P(seq_axis)
  if key_valid_len is not None:
    lens = jnp.broadcast_to(jnp.asarray(key_valid_len).reshape(-1), (L,))
    args["key_len"], specs["key_len"] = _pad_rows(lens, Lp), P(seq_axis)
  if query_valid_len is not None:
    args["query_len"], specs["query_len"] = jnp.asarray(query_valid_len), P()

  def shard(a):
    return ring_attention_shard(
        a["q"], a["k"], a["v"], a.get("key_mask"), axis_name=seq_axis,
        scale=scale, is_causal=is_causal, key_valid_len=a.get("key_len"),
        query_valid_len=a.get("query_len"), num_keys=M, precision=precision,
        block_q=block_q, block_k=block_k)

  run = _compat.shard_map(shard, mesh=mesh, in_specs=(specs,),
                          out_specs=P(seq_axis, head_axis, None))
  out_LHV = run(args)[:L]
  chex.assert_shape(out_LHV, (L, H, V))
  return out_LHV


def ring_attention(q_BLHK, k_BMGK, v_BMGV, mask=None, *, mesh=None,
                   seq_axis: Hashable = "seq",
                   batch_axis: Hashable | None = "data",
                   head_axis: Hashable | None = None, bias=None, scale=None,
                   is_causal: bool = False, local_window=None,
                   key_valid_len=None, query_valid_len=None, precision=None,
                   block_q: int | None = None, block_k: int | None = None):
  """Ring attention of a batch of globally sharded arrays.

  Equal to `jax.vmap(jattn.dot_product_attention)` over the batch (for the
  supported masks), with the batch sharded over `batch_axis`, the sequence
  over `seq_axis` and optionally the heads over `head_axis`.

  Args:
    q_BLHK: (B, L, H, K); k_BMGK: (B, M, G, K); v_BMGV: (B, M, G, V).
    mask: optional key-padding mask, bool (B, M), (B, 1, M) or (B, 1, 1, M)
      (leading size 1 broadcasts over the batch).
    mesh: the device mesh; None = the current mesh (`jax.set_mesh`).
    seq_axis: mesh axis for the sequence (required in the mesh).
    batch_axis: mesh axis for the batch (B must be a multiple of its size);
      None, or an axis the mesh lacks, leaves the batch unsharded.
    head_axis: optional mesh axis for the heads.
    bias, local_window: must be None (not supported).
    scale, is_causal, precision, block_q, block_k: as in
      `jattn.dot_product_attention`.
    key_valid_len: optional integer, scalar, (B,) or (B, L) (per query).
    query_valid_len: optional integer, scalar or (B,).

  Returns:
    (B, L, H, V) in q's dtype.
  """
  q_BLHK, k_BMGK, v_BMGV = (jnp.asarray(x) for x in (q_BLHK, k_BMGK, v_BMGV))
  for name, x in (("q_BLHK", q_BLHK), ("k_BMGK", k_BMGK), ("v_BMGV", v_BMGV)):
    _checks.check_rank(x, name, 4)
  _unsupported(bias, local_window)
  B, L = q_BLHK.shape[:2]
  for name, x in (("k_BMGK", k_BMGK), ("v_BMGV", v_BMGV)):
    if x.shape[0] != B:
      raise ValueError(f"{name}: expected batch size B={B} (q's), got "
                       f"{x.shape[0]}")
  mesh = resolve_mesh(mesh)
  batch_axis = _axis(mesh, batch_axis, "batch_axis", required=False)
  if batch_axis is not None and B % _mesh_sizes(mesh)[batch_axis]:
    raise ValueError(
        f"q_BLHK: expected a batch size divisible by the size "
        f"{_mesh_sizes(mesh)[batch_axis]} of mesh axis {batch_axis!r}, got "
        f"B={B}")

  def batched(x, name, ranks):
    """x with a leading batch axis of size B (scalars and size 1 broadcast)."""
    if x is None:
      return None
    x = jnp.asarray(x)
    _checks.check_rank(x, name, ranks)
    if x.ndim == 0:
      return jnp.broadcast_to(x, (B,))
    if x.shape[0] not in (1, B):
      raise ValueError(f"{name}: expected a leading batch axis of size {B} "
                       f"or 1, got shape {x.shape}")
    return jnp.broadcast_to(x, (B,) + x.shape[1:])

  for name, length in (("key_valid_len", key_valid_len),
                       ("query_valid_len", query_valid_len)):
    if length is not None:
      _checks.check_integer(length, name)
      _checks.check_nonnegative_values(length, name)
  extras = {
      "mask": batched(mask, "mask", (2, 3, 4)),
      "key_valid_len": batched(key_valid_len, "key_valid_len", (0, 1, 2)),
      "query_valid_len": batched(query_valid_len, "query_valid_len", (0, 1)),
  }
  extras = {k: x for k, x in extras.items() if x is not None}

  def one(q, k, v, extra):
    return ring_dot_product_attention(
        q, k, v, extra.get("mask"), mesh=mesh, seq_axis=seq_axis,
        head_axis=head_axis, scale=scale, is_causal=is_causal,
        key_valid_len=extra.get("key_valid_len"),
        query_valid_len=extra.get("query_valid_len"), precision=precision,
        block_q=block_q, block_k=block_k)

  out = jax.vmap(one, spmd_axis_name=batch_axis)(q_BLHK, k_BMGK, v_BMGV,
                                                 extras)
  chex.assert_shape(out, (B, L) + out.shape[2:])
  return out
