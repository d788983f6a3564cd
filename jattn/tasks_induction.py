"""The induction-heads task (Olsson et al. 2022; the synthetic setting of
Fu et al. 2023 and Gu & Dao 2023), generated on device from a PRNG key.

A sequence of random symbols holds one trigger token somewhere, followed by
some symbol; the sequence ends with the trigger again, and there the model
must output the symbol that followed the trigger the first time. Attention
solves it with the two-step circuit of an induction head: a token notes its
predecessor (the position right after the trigger marks itself), then the
last position looks that mark up by content and copies its token, at any
distance.

Token ids (A = alphabet_size, vocab_size = A + 3, as for the copy task):

  0          blank (a target only)
  1 .. A     symbols
  A + 1      trigger
  A + 2      padding

Layout of one example of length L (drawn uniformly from
[min_seq_len, seq_len]; min_seq_len = 0 means seq_len, every sequence full
length), N = seq_len:

  inputs   [random symbols, the trigger at p and at L - 1][padding x (N - L)]
  targets  blank except at L - 1: inputs[p + 1]

with p uniform in [0, L - 3] and the other L - 2 inputs uniform over the A
symbols (the trigger occurs exactly twice). The copy mask is True at L - 1
only; positions L .. N-1 are padding (token_mask False, weights 0).

What differs from the published setting (Mamba's: causal language models at
length 256 with 16 symbols, tested up to length 2^20): sequences are short
(64 tokens by default) and the target is scored at the second trigger's own
position (the batch interface scores positions; a causal model reads the
trigger there and predicts what followed it, a bidirectional one sees no
answer at that position either). Only one position per sequence is scored,
so the accuracy is over sequences.

Difficulty knobs: seq_len (the source is on average farther from the end),
alphabet_size. Held-out evaluation (`InductionTask.held_out`): lengths
ood_min_seq_len .. ood_max_seq_len (ood_max_seq_len = 0: none;
ood_min_seq_len = 0: seq_len + 1), e.g. 65 .. 128 after training at 64.

The memoryless baseline (blank everywhere but a uniform guess at the last
position) has cross-entropy ln A per sequence, ln A / N per position of a
full-length sequence (`InductionTask.baseline_loss`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import tasks_common


@dataclasses.dataclass(frozen=True)
class InductionTask:
  """Settings of an induction-heads task (hashable: a static jit argument).

  Attributes:
    seq_len: N, the (largest) sequence length (>= 3).
    min_seq_len: the shortest training length (0 = seq_len).
    alphabet_size: A, distinct symbols (ids 1 .. A).
    ood_min_seq_len, ood_max_seq_len: the held-out lengths, outside
      [min_seq_len, seq_len] (ood_min_seq_len 0 = seq_len + 1;
      ood_max_seq_len 0 = no held-out evaluation, whatever ood_min_seq_len
      says).
  """

  seq_len: int = 64
  min_seq_len: int = 0
  alphabet_size: int = 16
  ood_min_seq_len: int = 0
  ood_max_seq_len: int = 0

  def __post_init__(self):
    _checks.check_positive_int(self.seq_len, "seq_len", minimum=3)
    _checks.check_positive_int(self.min_seq_len, "min_seq_len", minimum=0)
    _checks.check_positive_int(self.alphabet_size, "alphabet_size", minimum=2)
    _checks.check_positive_int(self.ood_min_seq_len, "ood_min_seq_len",
                               minimum=0)
    _checks.check_positive_int(self.ood_max_seq_len, "ood_max_seq_len",
                               minimum=0)
    if self.min_seq_len:
      _checks.check_positive_int(self.min_seq_len, "min_seq_len", minimum=3)
      tasks_common.check_at_most(self.min_seq_len, "min_seq_len",
                                 self.seq_len, "seq_len")
    if self.ood_max_seq_len:
      lo, hi = self.held_out_range
      _checks.check_positive_int(lo, "ood_min_seq_len", minimum=3)
      tasks_common.check_at_most(lo, "ood_min_seq_len", hi, "ood_max_seq_len")
      tasks_common.check_disjoint((lo, hi), self.length_range,
                                  "ood_min_seq_len, ood_max_seq_len")

  @property
  def length_range(self) -> tuple[int, int]:
    """(shortest, longest) training length."""
    return (self.min_seq_len or self.seq_len, self.seq_len)

  @property
  def held_out_range(self) -> tuple[int, int]:
    """(shortest, longest) held-out length (meaningful if ood_max_seq_len)."""
    return (self.ood_min_seq_len or self.seq_len + 1, self.ood_max_seq_len)

  @property
  def vocab_size(self) -> int:
    """alphabet_size + 3: blank, the symbols, trigger, padding."""
    return self.alphabet_size + 3

  @property
  def blank(self) -> int:
    return 0

  @property
  def trigger(self) -> int:
    return self.alphabet_size + 1

  @property
  def pad(self) -> int:
    return self.alphabet_size + 2

  @property
  def variable_length(self) -> bool:
    lo, hi = self.length_range
    return lo < hi

  @property
  def num_choices(self) -> int:
    """A: the scored target is one of the symbols."""
    return self.alphabet_size

  @property
  def baseline_loss(self) -> float:
    """ln(A) / N: the memoryless strategy's cross-entropy per position of a
    full-length sequence (a lower bound for variable lengths; see
    `jattn.tasks.batch_baseline_loss`)."""
    return math.log(self.alphabet_size) / self.seq_len

  def held_out(self) -> InductionTask | None:
    """The task at the held-out lengths, or None."""
    if not self.ood_max_seq_len:
      return None
    lo, hi = self.held_out_range
    return InductionTask(seq_len=hi, min_seq_len=lo,
                         alphabet_size=self.alphabet_size)


def make_batch(task: InductionTask, key, batch_size: int) -> dict:
  """A batch of induction-heads examples generated from `key`.

  Args:
    task: an InductionTask (static under jit).
    key: a PRNG key.
    batch_size: B (static under jit).

  Returns:
    The batch dict of `jattn.tasks_common` ((B, N) arrays, N = seq_len),
    laid out as in the module docstring.
  """
  tasks_common.check_batch_size(batch_size)
  B, N = batch_size, task.seq_len
  lo, hi = task.length_range
  key_symbols, key_length, key_first = jax.random.split(key, 3)

  length_B1 = jax.random.randint(key_length, (B, 1), lo, hi + 1,
                                 dtype=jnp.int32)
  first_B1 = jax.random.randint(key_first, (B, 1), 0, length_B1 - 2,
                                dtype=jnp.int32)
  pos_BN = tasks_common.positions(B, N)
  trigger = jnp.asarray(task.trigger, jnp.int32)
  inputs_BN = jax.random.randint(key_symbols, (B, N), 1,
                                 task.alphabet_size + 1, dtype=jnp.int32)
  is_trigger_BN = (pos_BN == first_B1) | (pos_BN == length_B1 - 1)
  inputs_BN = jnp.where(is_trigger_BN, trigger, inputs_BN)

  answer_B1 = jnp.take_along_axis(inputs_BN, first_B1 + 1, axis=1)
  copy_mask_BN = pos_BN == length_B1 - 1
  targets_BN = jnp.where(copy_mask_BN, answer_B1, jnp.zeros((), jnp.int32))
  return tasks_common.assemble(inputs_BN, targets_BN, copy_mask_BN,
                               pos_BN < length_B1, task.pad)
