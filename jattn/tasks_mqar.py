"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"),
generated on device from a PRNG key.

A sequence opens with D key-value pairs, then, among blanks, queries Q of
the keys again; at each query the model must output that key's value. A
model solves it by matching each query against the keys it has read, which
is what attention does in one layer (content-based lookup) and what a
fixed-size recurrent state or a fixed filter must squeeze into its memory.

Token ids (K = num_keys, V = num_values, vocab_size = K + V + 1):

  0                blank
  1 .. K           keys
  K + 1 .. K + V   values

Layout of one example, D = num_pairs, Q = num_queries (0 = D),
N = seq_len (positions 0 .. N-1):

  inputs   [k_1 v_1 k_2 v_2 .. k_D v_D][blank and Q query keys x (N - 2 D)]
  targets  blank everywhere except at a query of k_i: v_i

The D keys are distinct (drawn without replacement from the K keys, in
random order), the values are drawn with replacement from the V values.
The queried pairs are the first Q of a random permutation of the D pairs;
the queries sit at Q distinct random positions in [2 D, N), increasing, so
the j-th query from the left asks the j-th pair of that permutation. The
copy mask is True at the Q query positions; every token is real.

What differs from Zoology's MQAR, which trains causal language models on it:

  * the value is the target at the query's own position (not the next
    token): the batch interface scores positions, and the query's input is
    the key, so the answer never appears in the input there and a
    bidirectional model cannot read it off;
  * query positions are uniform over [2 D, N), not power-law distributed,
    and the other positions are blank, not random tokens;
  * key and value alphabets are small (32 each by default, Zoology 8192 in
    all) so a CPU trains it in minutes.

Difficulty knobs: num_pairs (more keys to hold and tell apart), seq_len
(queries farther from their keys), num_keys / num_values. Held-out
evaluation (`MQARTask.held_out`): the same task at ood_seq_len tokens
and/or ood_num_pairs pairs (0 = the training value; both 0 = none).

The memoryless baseline (blank off the queries, a uniform guess over the V
values at each query) has cross-entropy Q ln V per sequence,
Q ln V / N per position (`MQARTask.baseline_loss`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import tasks_common


@dataclasses.dataclass(frozen=True)
class MQARTask:
  """Settings of a multi-query associative recall task (hashable).

  Attributes:
    num_pairs: D, key-value pairs at the start of each sequence.
    num_queries: Q, keys queried again (0 = num_pairs: every key once).
    seq_len: N, tokens per sequence (>= 2 D + Q).
    num_keys: K, distinct keys (ids 1 .. K; >= D and >= ood_num_pairs).
    num_values: V, distinct values (ids K + 1 .. K + V).
    ood_seq_len: N of the held-out evaluation (0 = seq_len).
    ood_num_pairs: D of the held-out evaluation (0 = num_pairs); with
      ood_seq_len = 0 as well there is no held-out evaluation.
  """

  num_pairs: int = 8
  num_queries: int = 0
  seq_len: int = 64
  num_keys: int = 32
  num_values: int = 32
  ood_seq_len: int = 0
  ood_num_pairs: int = 0

  def __post_init__(self):
    _checks.check_positive_int(self.num_pairs, "num_pairs")
    _checks.check_positive_int(self.num_queries, "num_queries", minimum=0)
    _checks.check_positive_int(self.seq_len, "seq_len")
    _checks.check_positive_int(self.num_keys, "num_keys")
    _checks.check_positive_int(self.num_values, "num_values", minimum=2)
    _checks.check_positive_int(self.ood_seq_len, "ood_seq_len", minimum=0)
    _checks.check_positive_int(self.ood_num_pairs, "ood_num_pairs", minimum=0)
    tasks_common.check_at_most(self.num_pairs, "num_pairs", self.num_keys,
                               "num_keys")
    tasks_common.check_at_most(self.num_queries, "num_queries",
                               self.num_pairs, "num_pairs")
    need = 2 * self.num_pairs + self.queries
    if self.seq_len < need:
      raise ValueError(
          f"seq_len: expected an int >= 2 num_pairs + num_queries = {need}, "
          f"got {self.seq_len}")
    if self.has_held_out:
      self._check_held_out()

  def _check_held_out(self):
    seq_len, num_pairs = self.held_out_settings
    if (seq_len, num_pairs) == (self.seq_len, self.num_pairs):
      raise ValueError(
          "ood_seq_len, ood_num_pairs: expected a held-out setting other "
          f"than the training one (seq_len={self.seq_len}, num_pairs="
          f"{self.num_pairs}), got the same")
    tasks_common.check_at_most(num_pairs, "ood_num_pairs", self.num_keys,
                               "num_keys")
    queries = min(self.num_queries, num_pairs) if self.num_queries else (
        num_pairs)
    need = 2 * num_pairs + queries
    if seq_len < need:
      raise ValueError(
          f"ood_seq_len: expected an int >= 2 ood_num_pairs + num_queries = "
          f"{need}, got {seq_len}")

  @property
  def queries(self) -> int:
    """Q: num_queries, or num_pairs when that is 0."""
    return self.num_queries or self.num_pairs

  @property
  def vocab_size(self) -> int:
    """num_keys + num_values + 1: blank, the keys, the values."""
    return self.num_keys + self.num_values + 1

  @property
  def blank(self) -> int:
    return 0

  @property
  def pad(self) -> int:
    """Never in a batch (every token is real); blank, for the interface."""
    return 0

  @property
  def variable_length(self) -> bool:
    return False

  @property
  def num_choices(self) -> int:
    """V: a scored target is one of the values."""
    return self.num_values

  @property
  def baseline_loss(self) -> float:
    """Q ln(V) / N: the memoryless strategy's cross-entropy per position."""
    return self.queries * math.log(self.num_values) / self.seq_len

  @property
  def has_held_out(self) -> bool:
    return bool(self.ood_seq_len or self.ood_num_pairs)

  @property
  def held_out_settings(self) -> tuple[int, int]:
    """(N, D) of the held-out evaluation."""
    return (self.ood_seq_len or self.seq_len,
            self.ood_num_pairs or self.num_pairs)

  def held_out(self) -> MQARTask | None:
    """The task at the held-out length / number of pairs, or None."""
    if not self.has_held_out:
      return None
    seq_len, num_pairs = self.held_out_settings
    num_queries = self.num_queries and min(self.num_queries, num_pairs)
    return dataclasses.replace(self, seq_len=seq_len, num_pairs=num_pairs,
                               num_queries=num_queries, ood_seq_len=0,
                               ood_num_pairs=0)


def make_batch(task: MQARTask, key, batch_size: int) -> dict:
  """A batch of MQAR examples generated from `key`.

  Args:
    task: an MQARTask (static under jit).
    key: a PRNG key.
    batch_size: B (static under jit).

  Returns:
    The batch dict of `jattn.tasks_common` ((B, N) arrays, N = seq_len),
    laid out as in the module docstring.
  """
  tasks_common.check_batch_size(batch_size)
  B, D, Q, N = batch_size, task.num_pairs, task.queries, task.seq_len
  key_keys, key_values, key_order, key_where = jax.random.split(key, 4)

  keys_BD = 1 + tasks_common.random_subsets(key_keys, B, D, task.num_keys,
                                            sort=False)
  values_BD = jax.random.randint(key_values, (B, D), task.num_keys + 1,
                                 task.num_keys + task.num_values + 1,
                                 dtype=jnp.int32)
  # The prefix k_1 v_1 .. k_D v_D, interleaved.
  prefix_B2D = jnp.stack([keys_BD, values_BD], axis=2).reshape(B, 2 * D)

  asked_BQ = tasks_common.random_subsets(key_order, B, Q, D, sort=False)
  where_BQ = 2 * D + tasks_common.random_subsets(key_where, B, Q, N - 2 * D,
                                                 sort=True)
  query_keys_BQ = jnp.take_along_axis(keys_BD, asked_BQ, axis=1)
  answers_BQ = jnp.take_along_axis(values_BD, asked_BQ, axis=1)

  inputs_BN = tasks_common.scatter(query_keys_BQ, where_BQ, N)
  inputs_BN = inputs_BN.at[:, :2 * D].set(prefix_B2D)
  targets_BN = tasks_common.scatter(answers_BQ, where_BQ, N)
  copy_mask_BN = tasks_common.scatter(jnp.ones((B, Q), jnp.int32), where_BQ,
                                      N) > 0
  token_mask_BN = jnp.ones((B, N), jnp.bool_)
  return tasks_common.assemble(inputs_BN, targets_BN, copy_mask_BN,
                               token_mask_BN, task.pad)
