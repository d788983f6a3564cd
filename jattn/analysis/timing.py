"""Wall-clock time of jitted forward and forward+backward passes."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def time_samples(fn, *args, repeats: int = 5,
                 min_seconds: float = 0.05) -> list[float]:
  """`repeats` samples of the seconds of one call of the compiled
  `fn(*args)`.

  Compiles and runs once first (not timed); each sample loops the call
  until `min_seconds` pass and divides by the number of calls, so short
  calls are not lost in timer noise.
  """
  jax.block_until_ready(fn(*args))
  samples = []
  for _ in range(repeats):
    calls = 0
    start = time.perf_counter()
    while True:
      jax.block_until_ready(fn(*args))
      calls += 1
      elapsed = time.perf_counter() - start
      if elapsed >= min_seconds:
        break
    samples.append(elapsed / calls)
  return samples


def time_call(fn, *args, repeats: int = 5, min_seconds: float = 0.05) -> float:
  """Median seconds of one call of the compiled `fn(*args)` (the median of
  `time_samples`)."""
  return float(np.median(time_samples(fn, *args, repeats=repeats,
                                      min_seconds=min_seconds)))


def forward_and_backward(layer_fn):
  """Jitted forward `f(params, x)` and forward+backward (grad of sum(y^2)
  with respect to params and x) of a layer `layer_fn(params, x)`."""
  forward = jax.jit(layer_fn)

  def loss(params, x):
    return jnp.sum(jnp.square(layer_fn(params, x).astype(jnp.float32)))

  backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return forward, backward


def time_layer(layer_fn, params, x, *, repeats: int = 5,
               min_seconds: float = 0.05) -> dict[str, float]:
  """Seconds of one jitted forward and one forward+backward call on this
  device: {"forward": median, "forward_min", "forward_max",
  "forward_backward": median, "forward_backward_min",
  "forward_backward_max"} over `repeats` samples (`time_samples`)."""
  out = {}
  for name, fn in zip(("forward", "forward_backward"),
                      forward_and_backward(layer_fn)):
    samples = time_samples(fn, params, x, repeats=repeats,
                           min_seconds=min_seconds)
    out[name] = float(np.median(samples))
    out[name + "_min"], out[name + "_max"] = min(samples), max(samples)
  return out
