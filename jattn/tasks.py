"""Synthetic sequence tasks, generated on device from a PRNG key: the
copying-memory task and its variable-delay and selective variants, multi-
query associative recall (`jattn.tasks_mqar`) and induction heads
(`jattn.tasks_induction`), each with a held-out evaluation outside its
training range.

Every task is a frozen dataclass (hashable: a static jit argument) with
`seq_len`, `vocab_size`, `baseline_loss`, `variable_length` and
`held_out()`, and `make_batch(task, key, B)` gives a dict of (B, N) arrays:

  inputs      int32    token ids
  targets     int32    the token each position must output
  token_mask  bool     True = real token, False = padding
  copy_mask   bool     True at the positions that are scored (the answers)
  weights     float32  loss weight: 1 on real tokens, 0 on padding

so every model of `jattn.models` trains on every task unchanged: the loss is
over all real tokens (blank is the target off the scored positions), the
accuracy over the copy mask.

Config names (`from_config`, the `name` field of a task section):

  copy            CopyTask(variant="fixed"): the classic copying memory task
  variable_copy   CopyTask(variant="variable"): a delay per example
  selective_copy  CopyTask(variant="selective"): symbols at random positions
  mqar            MQARTask (`jattn.tasks_mqar`)
  induction       InductionTask (`jattn.tasks_induction`)

Length generalisation. `task.held_out()` is the task at settings outside the
training range (longer delays or sequences, more pairs), or None when the
task's ood_* fields are 0; the trainer evaluates it at the end of a run and
reports it separately from the in-range evaluation. `max_seq_len(task)` is
the longest sequence either one has (it sizes learned positional tables).

The copy task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016). A model
reads S symbols, waits through a long stretch of blanks, sees a delimiter,
and must then output the S symbols in order. Every other output is blank, so
the task measures how far back a sequence model can carry information: the
symbol emitted at position t was read delay + S positions earlier.

Token ids (A = alphabet_size, vocab_size = A + 3):

  0          blank
  1 .. A     symbols
  A + 1      delimiter
  A + 2      padding (variable-length variants only)

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

  "selective_variable": "selective" with a delay per example drawn as in
    "variable" (the symbols among the first S + delay_b - 1 positions), right
    padded; the held-out form of "selective".

"selective" is the selective copying task of Gu & Dao 2023 (Mamba) scaled
to a CPU: data tokens at random positions among noise (blank) tokens, to be
output in order after a marker, so that a model must pick the tokens by
content rather than by a fixed offset. What differs: Mamba's setting has 16
data tokens (vocabulary 16) in sequences of 4096 and trains causal models;
the defaults here are 10 symbols from 8 in 120 tokens, the model need not
be causal (the outputs' inputs are blank, so nothing leaks), the loss
covers every position (blank off the copy window; the accuracy counts the
copy window only), and the outputs follow one delimiter and S blanks
rather than S marker tokens.

Held-out delays (all variants): ood_min_delay .. ood_max_delay, drawn per
example like "variable" (contiguous variants) or "selective_variable"
(selective ones). ood_max_delay = 0: no held-out evaluation (ood_min_delay
is then ignored); ood_min_delay = 0: just past the training range
(delay + 1). The range must
miss the training delays, e.g. 101 .. 200 after training on 1 .. 100, or
1 .. 99 after the fixed delay 100.

The memoryless baseline: a model that outputs blank until the delimiter and
then a uniform guess over the A symbols for S steps has cross-entropy
S ln A per sequence, i.e. S ln A / N per position of a fixed-delay sequence
(`CopyTask.baseline_loss`). `batch_baseline_loss` gives the same baseline for
any batch of any task, weighted like the loss (exact for variable lengths
too).

Batches are built with `jax.random` and vectorised array ops only (no Python
loop over examples), so `jax.jit(make_batch, static_argnums=(0, 2))` works.
`jax.random`'s default threefry generator gives the same bits on CPU, GPU and
TPU, so the same key gives the same batch on every backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Union

import jax
import jax.numpy as jnp

from jattn import _checks
from jattn import tasks_common
from jattn import tasks_induction
from jattn import tasks_mqar
from jattn.tasks_induction import InductionTask
from jattn.tasks_mqar import MQARTask

VARIANTS = ("fixed", "variable", "selective", "selective_variable")
# Config name -> CopyTask variant.
COPY_NAMES = {"copy": "fixed", "variable_copy": "variable",
              "selective_copy": "selective"}
TASK_NAMES = tuple(COPY_NAMES) + ("mqar", "induction")

__all__ = ["COPY_NAMES", "CopyTask", "InductionTask", "MQARTask",
           "TASK_NAMES", "Task", "VARIANTS", "batch_baseline_loss",
           "from_config", "make_batch", "max_seq_len"]


@dataclasses.dataclass(frozen=True)
class CopyTask:
  """Settings of a copying-memory task (hashable: a static jit argument).

  Attributes:
    delay: the number of positions from the last symbol to the delimiter, plus
      one (blanks in between: delay - 1); the maximum delay for the
      variable-delay variants.
    num_symbols: S, symbols to copy.
    alphabet_size: A, distinct symbols (ids 1 .. A).
    variant: one of VARIANTS (see the module docstring).
    min_delay: the smallest delay drawn by "variable" and
      "selective_variable" (1 <= min_delay <= delay; ignored by the others).
    ood_min_delay, ood_max_delay: the held-out delays, outside the training
      delays (ood_min_delay 0 = delay + 1; ood_max_delay 0 = no held-out
      evaluation, whatever ood_min_delay says).
  """

  delay: int = 100
  num_symbols: int = 10
  alphabet_size: int = 8
  variant: str = "fixed"
  min_delay: int = 1
  ood_min_delay: int = 0
  ood_max_delay: int = 0

  def __post_init__(self):
    _checks.check_positive_int(self.delay, "delay")
    _checks.check_positive_int(self.num_symbols, "num_symbols")
    _checks.check_positive_int(self.alphabet_size, "alphabet_size", minimum=2)
    _checks.check_positive_int(self.min_delay, "min_delay")
    _checks.check_positive_int(self.ood_min_delay, "ood_min_delay", minimum=0)
    _checks.check_positive_int(self.ood_max_delay, "ood_max_delay", minimum=0)
    if self.variant not in VARIANTS:
      raise ValueError(
          f"variant: expected one of {list(VARIANTS)}, got {self.variant!r}")
    tasks_common.check_at_most(self.min_delay, "min_delay", self.delay,
                               "delay")
    if self.ood_max_delay:
      lo, hi = self.held_out_range
      tasks_common.check_at_most(lo, "ood_min_delay", hi, "ood_max_delay")
      tasks_common.check_disjoint((lo, hi), self.delay_range,
                                  "ood_min_delay, ood_max_delay")

  @property
  def selective(self) -> bool:
    """The symbols sit at random positions ("selective*" variants)."""
    return self.variant.startswith("selective")

  @property
  def variable_length(self) -> bool:
    """A delay per example, right padded ("variable", "selective_variable")."""
    return self.variant in ("variable", "selective_variable")

  @property
  def delay_range(self) -> tuple[int, int]:
    """(smallest, largest) delay of the training examples."""
    return ((self.min_delay if self.variable_length else self.delay),
            self.delay)

  @property
  def held_out_range(self) -> tuple[int, int]:
    """(smallest, largest) held-out delay (meaningful if ood_max_delay)."""
    return (self.ood_min_delay or self.delay + 1, self.ood_max_delay)

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
  def num_choices(self) -> int:
    """A: a scored target is one of the symbols."""
    return self.alphabet_size

  @property
  def baseline_loss(self) -> float:
    """num_symbols * ln(alphabet_size) / seq_len.

    The cross-entropy per position of the memoryless strategy (blank before
    and after the copy window, a uniform guess over the A symbols inside it),
    averaged over all N positions of a fixed-delay (or selective) sequence.
    For the variable-delay variants N is the maximum length, so this is a
    lower bound of that strategy's loss per real token (shorter sequences
    spread the same S ln A over fewer tokens); use `batch_baseline_loss` for
    the exact value of a batch.
    """
    return self.num_symbols * math.log(self.alphabet_size) / self.seq_len

  def held_out(self) -> CopyTask | None:
    """The task at the held-out delays (variable-delay), or None."""
    if not self.ood_max_delay:
      return None
    lo, hi = self.held_out_range
    variant = "selective_variable" if self.selective else "variable"
    return CopyTask(delay=hi, num_symbols=self.num_symbols,
                    alphabet_size=self.alphabet_size, variant=variant,
                    min_delay=lo)


Task = Union[CopyTask, MQARTask, InductionTask]
TASK_TYPES = (CopyTask, MQARTask, InductionTask)
_CLASSES = {"mqar": MQARTask, "induction": InductionTask}


def _as_dict(task_config) -> dict:
  if hasattr(task_config, "to_dict"):  # ml_collections.ConfigDict
    task_config = task_config.to_dict()
  if not isinstance(task_config, Mapping):
    raise TypeError(
        "task_config: expected an ml_collections ConfigDict or a dict, got "
        f"{type(task_config).__name__}")
  return dict(task_config)


def _copy_fields(name: str, fields: dict) -> dict:
  """The CopyTask fields of config `name`: its variant filled in."""
  variant = COPY_NAMES[name]
  if fields.get("variant", variant) != variant:
    raise ValueError(
        f"task_config.variant: expected {variant!r} (or no variant) for task "
        f"{name!r}, got {fields['variant']!r}")
  return dict(fields, variant=variant)


def from_config(task_config) -> Task:
  """A task from an ml_collections ConfigDict or a dict (or a task itself).

  The `name` field (one of TASK_NAMES; absent = a CopyTask with its own
  `variant` field) picks the class; the other fields are that class's
  (missing ones take their defaults). A field the task does not have raises
  ValueError, to catch typos and a `name` switched to a task with other
  fields.
  """
  if isinstance(task_config, TASK_TYPES):
    return task_config
  fields = _as_dict(task_config)
  name = fields.pop("name", None)
  if name is not None and name not in TASK_NAMES:
    raise ValueError(
        f"task_config.name: expected one of {list(TASK_NAMES)}, got {name!r}")
  if name is None or name in COPY_NAMES:
    cls, what = CopyTask, f"task {name or 'copy'!r}"
    if name is not None:
      fields = _copy_fields(name, fields)
  else:
    cls, what = _CLASSES[name], f"task {name!r}"
  tasks_common.check_fields(
      cls, fields, f"{what} (each task has its own fields: pick a task with "
      "--config=configs/copy.py:MODEL,TASK)")
  return cls(**fields)


def _check_task(task) -> None:
  if not isinstance(task, TASK_TYPES):
    raise TypeError(
        "task: expected a CopyTask, MQARTask or InductionTask, got "
        f"{type(task).__name__}")


def max_seq_len(task: Task) -> int:
  """The longest sequence of the task and of its held-out task."""
  _check_task(task)
  held_out = task.held_out()
  return max(task.seq_len, held_out.seq_len if held_out else 0)


def _delays(task: CopyTask, key, batch_size: int):
  """(B, 1) int32 per-example delays."""
  if not task.variable_length:
    return jnp.full((batch_size, 1), task.delay, jnp.int32)
  return jax.random.randint(key, (batch_size, 1), task.min_delay,
                            task.delay + 1, dtype=jnp.int32)


def _selective_positions(task: CopyTask, key, delay_B1):
  """(B, S) int32 sorted distinct positions in [0, S + delay_b - 1)."""
  S, B = task.num_symbols, delay_B1.shape[0]
  limit_B1 = None if not task.variable_length else S + delay_B1 - 1
  return tasks_common.random_subsets(key, B, S, S + task.delay - 1, limit_B1,
                                     sort=True)


def _copy_batch(task: CopyTask, key, batch_size: int) -> dict:
  """A batch of copy-task examples (layout in the module docstring)."""
  B, S, N = batch_size, task.num_symbols, task.seq_len
  key_symbols, key_delay, key_positions = jax.random.split(key, 3)

  symbols_BS = jax.random.randint(key_symbols, (B, S), 1,
                                  task.alphabet_size + 1, dtype=jnp.int32)
  delay_B1 = _delays(task, key_delay, B)
  pos_BN = tasks_common.positions(B, N)
  delimiter_pos_B1 = S + delay_B1 - 1
  length_B1 = delay_B1 + 2 * S

  # Inputs: the symbols (at 0 .. S-1, or scattered), the delimiter.
  if task.selective:
    where_BS = _selective_positions(task, key_positions, delay_B1)
    inputs_BN = tasks_common.scatter(symbols_BS, where_BS, N)
  else:
    inputs_BN = jnp.concatenate(
        [symbols_BS, jnp.zeros((B, N - S), jnp.int32)], axis=1)
  inputs_BN = jnp.where(pos_BN == delimiter_pos_B1,
                        jnp.asarray(task.delimiter, jnp.int32), inputs_BN)

  # Targets: symbol j at position delimiter + 1 + j, blank elsewhere.
  offset_BN = pos_BN - (delimiter_pos_B1 + 1)
  copy_mask_BN = (offset_BN >= 0) & (offset_BN < S)
  copied_BN = jnp.take_along_axis(symbols_BS, jnp.clip(offset_BN, 0, S - 1),
                                  axis=1)
  targets_BN = jnp.where(copy_mask_BN, copied_BN, jnp.zeros((), jnp.int32))
  return tasks_common.assemble(inputs_BN, targets_BN, copy_mask_BN,
                               pos_BN < length_B1, task.pad)


def make_batch(task: Task, key, batch_size: int) -> dict:
  """A batch of examples of `task`, generated from `key`.

  Args:
    task: a CopyTask, MQARTask or InductionTask (static under jit).
    key: a PRNG key (`jax.random.key` or `jax.random.PRNGKey`).
    batch_size: B (static under jit).

  Returns:
    {"inputs", "targets", "token_mask", "copy_mask", "weights"}, each of shape
    (B, N) with N = task.seq_len; dtypes in the module docstring, layouts in
    the docstrings of the task's module.
  """
  _check_task(task)
  tasks_common.check_batch_size(batch_size)
  if isinstance(task, MQARTask):
    return tasks_mqar.make_batch(task, key, batch_size)
  if isinstance(task, InductionTask):
    return tasks_induction.make_batch(task, key, batch_size)
  return _copy_batch(task, key, batch_size)


def batch_baseline_loss(task: Task, batch: Mapping):
  """The memoryless baseline cross-entropy of a batch, weighted like the loss.

  ln(C) * sum(weights at scored positions) / sum(weights), C =
  task.num_choices (the symbols, or MQAR's values): the loss of a model that
  predicts blank off the scored positions and a uniform answer on them.
  Equals `task.baseline_loss` for fixed-length tasks.
  """
  _check_task(task)
  weights_BN = jnp.asarray(batch["weights"], jnp.float32)
  copy_BN = jnp.asarray(batch["copy_mask"]).astype(jnp.float32)
  return (jnp.float32(math.log(task.num_choices))
          * jnp.sum(weights_BN * copy_BN) / jnp.sum(weights_BN))
