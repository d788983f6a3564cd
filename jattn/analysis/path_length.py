"""Maximum path length, measured from the structure of Jacobians.

For a layer y = f(x) on a sequence x of shape (N, D), its dependency pattern
is the boolean (N, N) matrix A[i, j] = (d y_i / d x_j != 0), read off the
Jacobian at random inputs. A stack of layers depends through the boolean
product of its layers' patterns, so the number of layer applications through
which output i first depends on input j is the smallest l with
(A_l ... A_2 A_1)[i, j] true. The maximum path length is the largest such l
over all pairs (i, j) that are connected at all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def dependency_pattern(layer_fn, x_ND) -> np.ndarray:
  """Boolean (N, N): output position i depends on input position j.

  Args:
    layer_fn: (N, D) -> (N, D') function (params already bound).
    x_ND: a random input at which to differentiate.

  Returns:
    bool array (N, N) from the non-zero blocks of the Jacobian.
  """
  jac = jax.jacfwd(layer_fn)(x_ND)  # (N, D', N, D)
  magnitude_NN = jnp.sum(jnp.abs(jac), axis=(1, 3))
  return np.asarray(magnitude_NN > 0)


def hops(patterns, max_layers: int | None = None) -> np.ndarray:
  """Fewest layer applications linking each input j to each output i.

  Args:
    patterns: one (N, N) boolean pattern (the same layer repeated) or a list
      of patterns applied in order, repeated cyclically.
    max_layers: stop after this many layers (default: until nothing new is
      reached, at most N * len(patterns) layers).

  Returns:
    int (N, N) array: the layer count for connected pairs, -1 otherwise.
  """
  if isinstance(patterns, np.ndarray) and patterns.ndim == 2:
    patterns = [patterns]
  patterns = [np.asarray(p, bool) for p in patterns]
  n = patterns[0].shape[0]
  limit = max_layers or n * len(patterns) + 1
  reach = np.eye(n, dtype=bool)   # reach[i, j]: output i sees input j so far
  result = np.full((n, n), -1, dtype=np.int64)
  stale = 0
  for layer in range(1, limit + 1):
    pattern = patterns[(layer - 1) % len(patterns)]
    new_reach = (pattern.astype(np.int64) @ reach.astype(np.int64)) > 0
    fresh = new_reach & (result < 0)
    result[fresh] = layer
    stale = stale + 1 if (new_reach == reach).all() else 0
    reach = new_reach
    if (result >= 0).all() or stale >= len(patterns):
      break
  return result


def max_path_length(patterns, max_layers: int | None = None) -> int:
  """The largest `hops` value over connected (output, input) pairs."""
  h = hops(patterns, max_layers)
  return int(h.max()) if (h >= 0).any() else -1


def recurrence_step_graph(pair_pattern, n: int) -> np.ndarray:
  """One-recurrence-step position graph of a recurrent layer, (N, N) bool.

  Constructed, not measured: the chain of N - 1 steps is assumed from the
  2-token pattern, and a parallel prefix sum (`jnp.cumsum`), whose pattern
  is the same, gets the same answer. `jaxpr_path.jaxpr_distances` measures
  the path on the computation itself (O(N) for a `lax.scan`, O(log N) for
  an associative scan).

  Args:
    pair_pattern: the (2, 2) `dependency_pattern` of the recurrent layer run
      on a 2-token sequence: entry [1, 0] says the state carries position 0
      forward into position 1 in one recurrence step (entry [0, 1]: backward,
      for a reversed recurrence).
    n: sequence length N.

  Returns:
    step[i, j]: state i reads state j through one recurrence step (and every
    state keeps what it has: the diagonal is set).
  """
  pair_pattern = np.asarray(pair_pattern, bool)
  step = np.eye(n, dtype=bool)
  if pair_pattern[1, 0]:
    step[np.arange(1, n), np.arange(n - 1)] = True
  if pair_pattern[0, 1]:
    step[np.arange(n - 1), np.arange(1, n)] = True
  return step


def recurrence_steps(step) -> np.ndarray:
  """Fewest recurrence steps from input j to output i (-1 if unreachable).

  Input j enters state j with no step; each step follows `step` once.

  Args:
    step: (N, N) one-step graph from `recurrence_step_graph`.
  """
  n = step.shape[0]
  reach = np.eye(n, dtype=bool)
  result = np.where(reach, 0, -1).astype(np.int64)
  for count in range(1, n + 1):
    reach = (step.astype(np.int64) @ reach.astype(np.int64)) > 0
    fresh = reach & (result < 0)
    if not fresh.any():
      break
    result[fresh] = count
  return result
