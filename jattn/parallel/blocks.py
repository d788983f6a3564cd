"""Sequence-parallel forms of jattn's self-attention layers (ring attention).

`ring_self_attention` and `ring_transformer_block` take the params and
arguments of `jattn.self_attention` and `jattn.transformer_block` and give
the same outputs; only the attention core runs as ring attention over the
mesh axis "seq" (projections, feed-forward and layer norms are token-wise,
so jit partitions them along the sequence by itself). They are per-example
functions of logical (N, D) arrays; batch them with
`jax.vmap(..., spmd_axis_name="data")`.

`jattn.models` uses `ring_transformer_block` instead of
`jattn.transformer_block` when `seq_parallel_active()`, i.e. when the
current mesh (`jax.set_mesh`) has an axis "seq" of size > 1.
"""

from __future__ import annotations

import jax
import numpy as np

from jattn import _compat
from jattn import multihead
from jattn import transformer
from jattn.parallel import ring


def seq_parallel_active(seq_axis: str = "seq") -> bool:
  """Whether the current mesh has `seq_axis` with size > 1."""
  mesh = _compat.current_mesh()
  if mesh is None:
    return False
  return dict(zip(mesh.axis_names, mesh.axis_sizes)).get(seq_axis, 1) > 1


def _head_axis(mesh, head_axis, H: int, G: int):
  """head_axis if the mesh has it with a size dividing H and G, else None."""
  sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
  size = sizes.get(head_axis, 1)
  return head_axis if size > 1 and not H % size and not G % size else None


def ring_core(mesh=None, *, seq_axis: str = "seq",
              head_axis: str | None = "model"):
  """Ring attention as an attention core (`jattn.attention`'s signature), for
  `self_attention(..., attention_fn=ring_core(mesh))` and
  `transformer_block(..., attention_fn=...)`.

  Args:
    mesh: the mesh; None = the current mesh (`jax.set_mesh`) at call time.
    seq_axis: mesh axis of the sequence.
    head_axis: mesh axis for the heads, used when its size divides the
      numbers of query and key/value heads (as `param_shardings` splits
      them); None never splits heads.

  Returns:
    `core(q_LHK, k_MGK, v_MGV, mask=None, **core_args) -> (L, H, V)`, a
    `ring.ring_dot_product_attention` (key-padding masks, causal, valid
    lengths; bias and local windows raise ValueError).
  """
  def core(q_LHK, k_MGK, v_MGV, mask=None, **core_args):
    resolved = ring.resolve_mesh(mesh)
    H, G = q_LHK.shape[1], k_MGK.shape[1]
    return ring.ring_dot_product_attention(
        q_LHK, k_MGK, v_MGV, mask, mesh=resolved, seq_axis=seq_axis,
        head_axis=_head_axis(resolved, head_axis, H, G), **core_args)

  return core


def ring_self_attention(params, x_ND, mask=None, *, positions=None,
                        is_causal: bool = False, scale=None, precision=None,
                        mesh=None, seq_axis: str = "seq",
                        head_axis: str | None = "model"):
  """`jattn.self_attention` with the ring-attention core (`ring_core`).

  Args:
    params: dict from `jattn.init_self_attention`.
    x_ND: (N, D) tokens (logical; sharded over `seq_axis` by jit).
    mask: optional key-padding mask, bool (N,), (1, N) or (1, 1, N).
    positions: optional (N,) positions for rotary embeddings.
    is_causal, scale, precision: as in `jattn.self_attention`.
    mesh, seq_axis, head_axis: as in `ring_core`.

  Returns:
    (N, D) in x's dtype.
  """
  return multihead.self_attention(
      params, x_ND, mask, positions=positions, is_causal=is_causal,
      scale=scale, precision=precision,
      attention_fn=ring_core(mesh, seq_axis=seq_axis, head_axis=head_axis))


def ring_transformer_block(params, x_ND, mask=None, *, pre_norm: bool = False,
                           is_causal: bool = False, positions=None,
                           dropout_rate: float = 0.0, dropout_key=None,
                           deterministic: bool = True,
                           activation=jax.nn.relu, precision=None, mesh=None,
                           seq_axis: str = "seq",
                           head_axis: str | None = "model"):
  """`jattn.transformer_block` with ring attention (same params, same
  result).

  Args:
    params: dict from `jattn.init_transformer_block`.
    x_ND: (N, D) tokens.
    mask: optional bool (N,) token validity (True = real token): padded
      tokens are zeroed, hidden as keys, and output zero.
    mesh, seq_axis, head_axis: as in `ring_self_attention`.
    Other arguments: as in `jattn.transformer_block` (no `return_weights`:
      ring attention never forms the weights).

  Returns:
    (N, D) in x's dtype.
  """
  if mask is not None and np.ndim(mask) != 1:
    raise ValueError(
        "mask: expected a bool (N,) token mask for the ring transformer "
        f"block, got shape {np.shape(mask)}")
  attention_fn = ring_core(mesh, seq_axis=seq_axis, head_axis=head_axis)
  return transformer.transformer_block(
      params, x_ND, mask, pre_norm=pre_norm, is_causal=is_causal,
      positions=positions, dropout_rate=dropout_rate, dropout_key=dropout_key,
      deterministic=deterministic, activation=activation, precision=precision,
      attention_fn=attention_fn)
