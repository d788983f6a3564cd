"""Per-device memory of ring attention scales as n / p (compiled analysis).

The compiled per-device program of a (non-causal) ring-attention gradient
(forward and backward) is analysed at one sequence length n over p = 2 and
p = 8 devices of a "seq" mesh axis: its memory (arguments + outputs +
temporaries) must shrink about 4x, as n / p does. Memory that grew like n
(replicated keys) would not shrink, and memory like (n / p)^2 (a dense hop)
would shrink 16x.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jattn import parallel


def per_device_bytes(n: int, p: int) -> int:
  mesh = parallel.make_mesh({"data": 1, "seq": p})
  shape = jax.ShapeDtypeStruct((1, n, 2, 64), jnp.float32)

  def loss(q, k, v):
    return jnp.sum(parallel.ring_attention(q, k, v, mesh=mesh,
                                           is_causal=False))

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  stats = grad.lower(shape, shape, shape).compile().memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def test_per_device_memory_scales_as_n_over_p():
  n = 2048
  two, eight = per_device_bytes(n, 2), per_device_bytes(n, 8)
  # q, k, v, their gradients and the ring's buffers at n / p = 1024 rows
  # of 2 x 64 float32 are ~0.5 MiB each.
  assert 4 * 2**20 < two < 32 * 2**20, two
  assert 3.0 < two / eight < 5.0, (two, eight)
