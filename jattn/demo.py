"""A one-minute tour of the functional core: `python -m jattn.demo`.

Builds a padded batch, runs jitted+vmapped self-attention, checks it against
the unbatched function on each valid prefix and prints the attention weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jattn


def main() -> None:
  print("jax", jax.__version__, "devices:", jax.devices())
  B, N, D, H = 3, 6, 16, 4
  key_params, key_x = jax.random.split(jax.random.key(0))
  params = jattn.init_self_attention(key_params, D, H)
  x_BND = jax.random.normal(key_x, (B, N, D), jnp.float32)
  x_BND = x_BND + jattn.sinusoidal_encoding(N, D)[None]
  valid_len_B = jnp.array([6, 4, 2])

  attend = jattn.batched(
      lambda p, x, m: jattn.self_attention(p, x, m, return_weights=True))
  y_BND, weights_BHNN = attend(params, x_BND, jattn.padding_mask(valid_len_B, N))
  print(f"self_attention on a batch: x {x_BND.shape} -> y {y_BND.shape}, "
        f"weights {weights_BHNN.shape}")

  for b, n in enumerate(np.asarray(valid_len_B)):
    alone = jattn.self_attention(params, x_BND[b, :n])
    err = float(jnp.max(jnp.abs(alone - y_BND[b, :n])))
    print(f"  example {b}: valid length {n}, |batched - unbatched prefix| = "
          f"{err:.1e}")

  np.set_printoptions(precision=2, suppress=True)
  print("head 0 weights of example 1 (keys 4, 5 are padding, weight 0):")
  print(np.asarray(weights_BHNN[1, 0]))


if __name__ == "__main__":
  main()
