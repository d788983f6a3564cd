"""One linear recurrence, computed sequentially and as a parallel prefix.

  h_t = a_t * h_{t-1} + x_t,   h_{-1} = 0,   t = 0 .. N-1   (elementwise)

`linear_recurrence_scan` runs it as `lax.scan`, one step after another (the
way an RNN runs); `linear_recurrence_associative` as `lax.associative_scan`
of the pairs (a_t, x_t) under the associative combine

  (a, b) then (a', b')  ->  (a' a, a' b + b'),

the composition of the affine maps h -> a h + b. Both return the same
values; they are the two subjects of the "sequential operations" and
"maximum path length" measurements: the critical path and the path length
of the scan grow as N, those of the associative scan as log N. A nonlinear
recurrence (tanh, gates) has no such combine, so its O(N) chain is a
property of the computation, not only of the implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(a_ND, x_ND):
  a_ND, x_ND = jnp.asarray(a_ND), jnp.asarray(x_ND)
  if x_ND.ndim < 1:
    raise ValueError(f"x_ND: expected rank >= 1, got shape {x_ND.shape}")
  if a_ND.shape != x_ND.shape:
    raise ValueError(f"a_ND: expected shape {x_ND.shape} (as x_ND), got "
                     f"{a_ND.shape}")
  return a_ND, x_ND


def linear_recurrence_scan(a_ND, x_ND):
  """h (N, ...) by `lax.scan` over the leading axis.

  Args:
    a_ND: (N, ...) coefficients a_t.
    x_ND: (N, ...) inputs x_t, same shape.
  """
  a_ND, x_ND = _check(a_ND, x_ND)

  def step(h, a_x):
    a, x = a_x
    h = a * h + x
    return h, h

  _, h_ND = jax.lax.scan(step, jnp.zeros_like(x_ND[0]), (a_ND, x_ND))
  return h_ND


def linear_recurrence_associative(a_ND, x_ND):
  """h (N, ...) by `lax.associative_scan` over the leading axis.

  Args:
    a_ND: (N, ...) coefficients a_t.
    x_ND: (N, ...) inputs x_t, same shape.
  """
  a_ND, x_ND = _check(a_ND, x_ND)

  def combine(earlier, later):
    a, b = earlier
    a_next, b_next = later
    return a_next * a, a_next * b + b_next

  _, h_ND = jax.lax.associative_scan(combine, (a_ND, x_ND))
  return h_ND
