"""Runs a per-example jattn function over any number of leading batch axes.

The wrappers take inputs of shape batch_shape + per-example shape. The batch
shape is read off the main input (e.g. x (*batch, N, D) -> batch). Every other
batched argument (masks, biases, positions, a second input) carries the same
leading axes, each of size batch_shape[i] or 1 (size 1 is shared across that
axis, as Flax broadcasts masks); None stays None. The batch is flattened to
one axis, the function is `jax.vmap`ped over it, and the batch shape is put
back on every output.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def batch_shape(x, name: str, example_rank: int) -> tuple[int, ...]:
  """x.shape minus its last `example_rank` axes (x needs at least those)."""
  shape = tuple(np.shape(x))
  if len(shape) < example_rank:
    raise ValueError(
        f"{name}: expected rank >= {example_rank} (leading batch axes, then "
        f"the per-example axes), got shape {shape}")
  return shape[:len(shape) - example_rank]


def _flatten(arg, name: str, lead: tuple[int, ...]):
  """Broadcasts arg's leading axes to `lead`; returns (B,) + example shape."""
  arg = jnp.asarray(arg)
  shape = arg.shape
  head, tail = shape[:len(lead)], shape[len(lead):]
  if len(shape) < len(lead) or any(h not in (1, b) for h, b in zip(head, lead)):
    raise ValueError(
        f"{name}: expected leading batch axes broadcastable to {lead} (size "
        f"1 shares an axis) followed by the per-example axes, got shape "
        f"{shape}")
  arg = jnp.broadcast_to(arg, lead + tail)
  return arg.reshape((math.prod(lead),) + tail)


def vmap_leading(fn, lead: tuple[int, ...], **batched):
  """fn(**example_args) vmapped over the leading batch axes `lead`.

  Args:
    fn: per-example function of keyword arguments; returns a pytree.
    lead: the batch shape (may be empty: then the batch is a single example).
    **batched: arrays with leading axes broadcastable to `lead`, or None.

  Returns:
    fn's outputs with `lead` in front of every leaf.
  """
  present = {k: _flatten(v, k, lead) for k, v in batched.items()
             if v is not None}
  absent = {k: None for k, v in batched.items() if v is None}

  def one(example_args):
    return fn(**example_args, **absent)

  out = jax.vmap(one)(present)
  return jax.tree.map(lambda y: y.reshape(lead + y.shape[1:]), out)


def split_keys(key, lead: tuple[int, ...]):
  """One PRNG key per example: `jax.random.split` shaped `lead` + key."""
  keys = jax.random.split(key, math.prod(lead))
  return keys.reshape(lead + keys.shape[1:])
