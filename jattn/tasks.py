"""The copying-memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al.
2016), generated on device from a PRNG key.

A model reads S symbols, waits through a long stretch of blanks, sees a
delimiter, and must then output the S symbols in order. Every other output
is blank, so the task measures how far back a sequence model can carry
information: the symbol emitted at position t was read delay + S positions
earlier.

Token ids (A = alphabet_size, vocab_size = A + 3):

  0          blank
  1 .. A     symbols
  A + 1      delimiter
  A + 2      padding (variable variant only)

Layout, S = num_symbols, N = seq_len = delay + 2 S (positions 0 .. N-1):

  "fixed" (the classic Arjovsky form):
    inputs   [s_1 .. s_S][blank x (delay - 1)][delimiter][blank x S]
    targets  [blank x (S + delay)][s_1 .. s_S]
    The delimiter sits at position S + delay - 1; the copies are the last S
    positions. For delay = 100, S = 10: N = 120, delimiter at 109, copies at
    110 .. 119.

  "variable": each example b draws its own delay_b uniformly from
    [min_delay, delay] and is laid out as "fixed" with delay_b, i.e. over its
    first N_b = delay_b + 2 S positions; positions N_b .. N-1 are right
    padding: input = padding token, target = blank, token_mask = False,
    weights = 0.

  "selective": the S symbols sit at S distinct random positions among the
    first S + delay - 1 positions (in increasing position order; the other
    positions are blank), then the delimiter at S + delay - 1 and S blanks.
    Targets are as in "fixed": the symbols in the order they appeared, in the
    last S positions.

A batch is a dict of (B, N) arrays:

  inputs      int32    the token ids above
  targets     int32    the token each position must output
  token_mask  bool     True = real token, False = padding
  copy_mask   bool     True at the S positions that must output a symbol
  weights     float32  loss weight: 1 on real tokens, 0 on padding

The memoryless baseline: a model that outputs blank until the delimiter and
then a uniform guess over the A symbols for S steps has cross-entropy
S ln A per sequence, i.e. S ln A / N per position of a fixed-delay sequence
(`CopyTask.baseline_loss`). `batch_baseline_loss` gives the same baseline for
any batch, weighted like the loss (exact for the variable variant too).

Batches are built with `jax.random` and vectorised array ops only (no Python
loop over examples), so `jax.jit(make_batch, static_argnums=(0, 2))` works.
`jax.random`'s default threefry generator gives the same bits on CPU, GPU and
TPU, so the same key gives the same batch on every backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp

from jattn import _checks

VARIANTS = ("fixed", "variable", "selective")


@dataclasses.dataclass(frozen=True)
class CopyTask:
  """Settings of a copying-memory task (hashable: a static jit argument).

  Attributes:
    delay: the number of positions from the last symbol to the delimiter, plus
      one (blanks in between: delay - 1); the maximum delay for "variable".
    num_symbols: S, symbols to copy.
    alphabet_size: A, distinct symbols (ids 1 .. A).
    variant: "fixed", "variable" or "selective" (see the module docstring).
    min_delay: the smallest delay drawn by the "variable" variant
      (1 <= min_delay <= delay; ignored by the other variants).
  """

  delay: int = 100
  num_symbols: int = 10
  alphabet_size: int = 8
  variant: str = "fixed"
  min_delay: int = 1

  def __post_init__(self):
    _checks.check_positive_int(self.delay, "delay")
    _checks.check_positive_int(self.num_symbols, "num_symbols")
    _checks.check_positive_int(self.alphabet_size, "alphabet_size", minimum=2)
    _checks.check_positive_int(self.min_delay, "min_delay")
    if self.variant not in VARIANTS:
      raise ValueError(
          f"variant: expected one of {list(VARIANTS)}, got {self.variant!r}")
    if self.min_delay > self.delay:
      raise ValueError(
          f"min_delay: expected an int <= delay={self.delay}, got "
          f"{self.min_delay}")

  @property
  def seq_len(self) -> int:
    """N = delay + 2 * num_symbols, the (maximum) sequence length."""
    return self.delay + 2 * self.num_symbols

  @property
  def vocab_size(self) -> int:
    """alphabet_size + 3: blank, the symbols, delimiter, padding."""
    return self.alphabet_size + 3

  @property
  def blank(self) -> int:
    return 0

  @property
  def delimiter(self) -> int:
    return self.alphabet_size + 1

  @property
  def pad(self) -> int:
    return self.alphabet_size + 2

  @property
  def baseline_loss(self) -> float:
    """num_symbols * ln(alphabet_size) / seq_len.

    The cross-entropy per position of the memoryless strategy (blank before
    and after the copy window, a uniform guess over the A symbols inside it),
    averaged over all N positions of a fixed-delay (or selective) sequence.
    For the variable variant N is the maximum length, so this is a lower
    bound of that strategy's loss per real token (shorter sequences spread
    the same S ln A over fewer tokens); use `batch_baseline_loss` for the
    exact value of a batch.
    """
    return self.num_symbols * math.log(self.alphabet_size) / self.seq_len


def from_config(task_config) -> CopyTask:
  """A CopyTask from an ml_collections ConfigDict or a dict.

  Only the CopyTask field names are accepted (missing ones take their
  defaults); an unknown name raises ValueError, to catch typos.
  """
  if isinstance(task_config, CopyTask):
    return task_config
  if hasattr(task_config, "to_dict"):  # ml_collections.ConfigDict
    task_config = task_config.to_dict()
  if not isinstance(task_config, Mapping):
    raise TypeError(
        "task_config: expected an ml_collections ConfigDict or a dict, got "
        f"{type(task_config).__name__}")
  fields = [f.name for f in dataclasses.fields(CopyTask)]
  unknown = sorted(set(task_config) - set(fields))
  if unknown:
    raise ValueError(
        f"task_config: expected only the fields {fields}, got unknown "
        f"{unknown}")
  return CopyTask(**dict(task_config))


def _delays(task: CopyTask, key, batch_size: int):
  """(B, 1) int32 per-example delays."""
  if task.variant != "variable":
    return jnp.full((batch_size, 1), task.delay, jnp.int32)
  return jax.random.randint(key, (batch_size, 1), task.min_delay,
                            task.delay + 1, dtype=jnp.int32)


def _selective_positions(task: CopyTask, key, batch_size: int):
  """(B, S) int32 sorted distinct positions in [0, S + delay - 1)."""
  S, P = task.num_symbols, task.num_symbols + task.delay - 1
  # A random permutation per row: a stable argsort of random bits (ties, if
  # any, break by index, identically on every backend).
  bits_BP = jax.random.bits(key, (batch_size, P), jnp.uint32)
  order_BP = jnp.argsort(bits_BP, axis=1, stable=True)
  return jnp.sort(order_BP[:, :S].astype(jnp.int32), axis=1)


def make_batch(task: CopyTask, key, batch_size: int) -> dict:
  """A batch of copy-task examples, generated from `key`.

  Args:
    task: a CopyTask (static under jit).
    key: a PRNG key (`jax.random.key` or `jax.random.PRNGKey`).
    batch_size: B (static under jit).

  Returns:
    {"inputs", "targets", "token_mask", "copy_mask", "weights"}, each of shape
    (B, N) with N = task.seq_len; dtypes and layout in the module docstring.
  """
  if not isinstance(task, CopyTask):
    raise TypeError(f"task: expected a CopyTask, got {type(task).__name__}")
  _checks.check_positive_int(batch_size, "batch_size")
  B, S, N = batch_size, task.num_symbols, task.seq_len
  key_symbols, key_delay, key_positions = jax.random.split(key, 3)

  symbols_BS = jax.random.randint(key_symbols, (B, S), 1,
                                  task.alphabet_size + 1, dtype=jnp.int32)
  delay_B1 = _delays(task, key_delay, B)
  pos_BN = jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32)[None, :], (B, N))
  delimiter_pos_B1 = S + delay_B1 - 1
  length_B1 = delay_B1 + 2 * S
  blank = jnp.zeros((), jnp.int32)

  # Inputs: the symbols (at 0 .. S-1, or scattered), the delimiter, padding.
  if task.variant == "selective":
    where_BS = _selective_positions(task, key_positions, B)
    rows_BS = jnp.broadcast_to(jnp.arange(B)[:, None], (B, S))
    inputs_BN = jnp.zeros((B, N), jnp.int32).at[rows_BS, where_BS].set(
        symbols_BS)
  else:
    inputs_BN = jnp.concatenate(
        [symbols_BS, jnp.zeros((B, N - S), jnp.int32)], axis=1)
  inputs_BN = jnp.where(pos_BN == delimiter_pos_B1,
                        jnp.asarray(task.delimiter, jnp.int32), inputs_BN)
  token_mask_BN = pos_BN < length_B1
  inputs_BN = jnp.where(token_mask_BN, inputs_BN,
                        jnp.asarray(task.pad, jnp.int32))

  # Targets: symbol j at position delimiter + 1 + j, blank elsewhere.
  offset_BN = pos_BN - (delimiter_pos_B1 + 1)
  copy_mask_BN = (offset_BN >= 0) & (offset_BN < S)
  copied_BN = jnp.take_along_axis(symbols_BS, jnp.clip(offset_BN, 0, S - 1),
                                  axis=1)
  targets_BN = jnp.where(copy_mask_BN, copied_BN, blank)
  weights_BN = token_mask_BN.astype(jnp.float32)

  batch = {"inputs": inputs_BN, "targets": targets_BN,
           "token_mask": token_mask_BN, "copy_mask": copy_mask_BN,
           "weights": weights_BN}
  chex.assert_shape(list(batch.values()), (B, N))
  chex.assert_type([inputs_BN, targets_BN, token_mask_BN, copy_mask_BN,
                    weights_BN],
                   [jnp.int32, jnp.int32, bool, bool, jnp.float32])
  return batch


def batch_baseline_loss(task: CopyTask, batch: Mapping):
  """The memoryless baseline cross-entropy of a batch, weighted like the loss.

  ln(A) * sum(weights at copy positions) / sum(weights): the loss of a model
  that predicts blank outside the copy window and a uniform symbol inside
  it. Equals `task.baseline_loss` for the fixed and selective variants.
  """
  weights_BN = jnp.asarray(batch["weights"], jnp.float32)
  copy_BN = jnp.asarray(batch["copy_mask"]).astype(jnp.float32)
  return (jnp.float32(math.log(task.alphabet_size))
          * jnp.sum(weights_BN * copy_BN) / jnp.sum(weights_BN))
