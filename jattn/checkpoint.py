"""Checkpoints of a training state with orbax-checkpoint, and resuming.

A training state is a pytree of arrays (jattn.train uses the dict
{"step", "params", "opt_state"}). `Checkpointer` wraps an orbax
`CheckpointManager` rooted at WORKDIR/checkpoints: one numbered folder per
saved step, written asynchronously and renamed into place only when complete,
so a run killed mid-save leaves the previous checkpoints intact and
`latest_step()` never returns a partial one.

Restoring takes the freshly initialised state as the target, so every leaf
comes back with the dtype, shape, sharding and pytree structure (optax's
named tuples included) of a fresh run: a resumed run compiles the same
program and continues bit for bit.

    with Checkpointer(workdir / "checkpoints", save_every=500, keep=3) as ckpt:
      start = ckpt.latest_step() or 0
      if start:
        state = ckpt.restore(state)          # `state` = a fresh state
      ...
      ckpt.save(step, state)                 # saves when step % 500 == 0

`load_params(workdir)` reads the parameters of the latest (or a given) step
without knowing the optimizer, e.g. to analyse a trained model.

Integrity: every save also records a SHA-256 checksum of each saved array,
written to WORKDIR/checkpoints_integrity/STEP.json only after orbax has
finished writing the step's data (orbax's post-finalization callback, in
its background thread). `restore_verified` restores the newest step whose
record exists and whose restored arrays match it, and says in one line for
each newer step why it was skipped (no record: the save never finished;
unreadable; checksums differ: the files were changed or damaged). When it
resumes an older step, the skipped newer ones are moved (not deleted) into
WORKDIR/checkpoints_skipped/STEP, so that the run can write those steps
again; when no step passes, all are moved there and the run starts afresh.
It never deletes a checkpoint and never returns an unverified state.
(Single-process runs; with several processes the records are not
written.)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jattn import _checks
from jattn import workdir as workdir_lib

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir) -> epath.Path:
  """WORKDIR/checkpoints, where jattn.train keeps its checkpoints (a local
  path made absolute, or a URI such as gs://bucket/run/checkpoints)."""
  return workdir_lib.as_path(workdir) / CHECKPOINT_DIR


def _abstract(state):
  """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
  def one(x):
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(one, state)


class Checkpointer:
  """Saves and restores training states under one directory.

  Args:
    directory: the checkpoint folder (created if missing): a local path or
      any URI orbax and etils.epath support (gs://...).
    save_every: `save(step, ...)` writes only when step is a multiple of it
      (or when forced).
    keep: the number of most recent checkpoints kept on disk (older ones are
      deleted); None keeps all.
    read_only: open an existing directory to read: nothing is created,
      cleaned up or deleted, and `save` raises.
  """

  def __init__(self, directory, *, save_every: int = 1, keep: int | None = 3,
               read_only: bool = False):
    _checks.check_positive_int(save_every, "save_every")
    if keep is not None:
      _checks.check_positive_int(keep, "keep")
    self.directory = workdir_lib.as_path(directory)
    self.save_every = save_every
    self.read_only = read_only
    if read_only and not self.directory.is_dir():
      raise FileNotFoundError(f"directory: expected an existing checkpoint "
                              f"folder, got {os.fspath(self.directory)!r}")
    # (orbax's own read_only option logs warnings; not saving is enough to
    # leave the folder as it is.)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only,
        # Leftovers of a save that was killed mid-way.
        cleanup_tmp_directories=not read_only,
        # Each step's integrity record is written as soon as orbax has
        # written its data (in orbax's background thread), so a run killed
        # between two saves leaves its last step verifiable.
        async_options=ocp.AsyncOptions(
            post_finalization_callback=self._write_records))
    self.integrity_dir = self.directory.parent / (self.directory.name +
                                                  "_integrity")
    self._pending = {}  # step -> checksums, written once the step is on disk
    self._records_lock = threading.Lock()  # _pending: two threads write it
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest completely written step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts writing `state` as `step` if step % save_every == 0 or `force`.

    Returns True when it writes. The write finishes in the background
    (`wait()` blocks until it has); don't donate `state`'s buffers to a jitted
    call meanwhile (jattn.train saves a copy).
    """
    if self.read_only:
      raise ValueError("save: expected a Checkpointer opened with "
                       "read_only=False, got a read-only one")
    step = int(step)
    if not force and step % self.save_every:
      return False
    self._write_records()
    if jax.process_count() == 1:
      # Before the save starts: its callback may fire before save() returns.
      record = checksums(state)
      with self._records_lock:
        self._pending[step] = record
    saved = self._manager.save(step, args=ocp.args.StandardSave(state),
                               force=True)
    if not saved:
      with self._records_lock:
        self._pending.pop(step, None)
    return saved

  def _write_records(self) -> None:
    """Writes the integrity records of the steps orbax has finished
    (called by orbax after each save's data is written, and by wait())."""
    with self._records_lock:
      self._write_finished_records()

  def _write_finished_records(self) -> None:
    if not self._pending:
      return
    on_disk = set(self._manager.all_steps())
    finished = [step for step in self._pending if step in on_disk]
    if finished:
      self.integrity_dir.mkdir(parents=True, exist_ok=True)
    for step in finished:
      workdir_lib.write_text_atomic(  # the record appears whole or not at all
          self.integrity_dir / f"{step}.json",
          json.dumps(self._pending.pop(step)))
    for stale in self.integrity_dir.glob("*.json") if finished else ():
      if stale.stem.isdigit() and int(stale.stem) not in on_disk:
        stale.unlink()  # its step was deleted (keep=N)

  def restore_verified(self, target, *, log=print):
    """(state, step) of the newest step that restores and matches its
    integrity record, shaped like `target`; newer steps are skipped with one
    line each through `log`. When no step passes, every step is moved aside
    and (target, 0) comes back: the run starts afresh from nothing
    unverified, and nothing is deleted."""
    skipped = []
    for step in reversed(self.all_steps()):
      reason = None
      record = self.integrity_dir / f"{step}.json"
      try:
        if not record.is_file():
          reason = "no integrity record (its save did not finish)"
        else:
          state = self.restore(target, step)
          expected = json.loads(record.read_text())
          got = checksums(state)
          if got != expected:
            bad = next(k for k in expected if got.get(k) != expected[k])
            reason = f"checksum mismatch in {bad} (damaged or changed files)"
      except Exception as err:  # pylint: disable=broad-except
        reason = (f"unreadable ({type(err).__name__}: "
                  f"{' '.join(str(err).split())[:160]})")
      if reason is None:
        if skipped and not self.read_only:
          self._move_aside(skipped, log)
        return state, step
      log(f"jattn.checkpoint: skipping step {step} in {self.directory}: "
          f"{reason}")
      skipped.append((step, reason))
    if skipped:
      log(f"jattn.checkpoint: no verified step in {self.directory}: "
          "starting afresh from step 0")
      if not self.read_only:
        self._move_aside(skipped, log)
    return target, 0

  @property
  def skipped_dir(self) -> epath.Path:
    """WORKDIR/checkpoints_skipped: where steps that failed verification
    are moved when an older good step is resumed."""
    return self.directory.parent / (self.directory.name + "_skipped")

  def _move_aside(self, skipped, log) -> None:
    """Moves the folders (and records) of the skipped (step, reason) pairs
    into `skipped_dir`, with the reason in reason.txt, so that the resumed
    run can save those steps again; nothing is deleted."""
    self._manager.wait_until_finished()
    for step, reason in skipped:
      target = self.skipped_dir / str(step)
      suffix = 1
      while target.exists():
        target = self.skipped_dir / f"{step}.{suffix}"
        suffix += 1
      target.mkdir(parents=True)
      # (Also makes the folder exist on object stores, which have none.)
      (target / "reason.txt").write_text(reason + "\n")
      (self.directory / str(step)).rename(target / "checkpoint")
      record = self.integrity_dir / f"{step}.json"
      if record.is_file():
        record.rename(target / "integrity.json")
      log(f"jattn.checkpoint: moved step {step} to {target} (it will be "
          "written again)")
    self._manager.reload()

  def restore(self, target, step: int | None = None):
    """The state saved at `step` (default: the latest), shaped like `target`.

    `target` is a pytree with the structure of the saved state: arrays or
    `jax.ShapeDtypeStruct`s; their dtypes and shardings are used.
    """
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._manager.restore(
        step, args=ocp.args.StandardRestore(_abstract(target)))

  def restore_raw(self, step: int | None = None):
    """The saved state as nested dicts and lists of arrays (no target)."""
    step = self.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._manager.restore(step, args=ocp.args.StandardRestore())

  def wait(self) -> None:
    """Blocks until background writes (and their records) have finished."""
    self._manager.wait_until_finished()
    self._write_records()

  def close(self) -> None:
    """Waits for background writes, then releases the manager."""
    self.wait()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def checksums(state) -> dict[str, str]:
  """{leaf path: SHA-256 of its dtype, shape and bytes} of a state's
  arrays (fetched to the host)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None),
                             jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    array = np.asarray(jax.device_get(leaf))
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    out[jax.tree_util.keystr(path)] = digest.hexdigest()
  return out


def load_params(workdir, step: int | None = None):
  """The model parameters saved by jattn.train in WORKDIR/checkpoints.

  Args:
    workdir: the run's workdir (the folder holding `checkpoints/`).
    step: which saved step; default the latest.

  Returns:
    (params, step): the params pytree of plain dicts of arrays, and the step
    they were saved at.
  """
  directory = checkpoint_dir(workdir)
  if not directory.is_dir():
    raise FileNotFoundError(
        f"workdir: expected a folder with {CHECKPOINT_DIR}/, got "
        f"{os.fspath(workdir)!r}")
  ckpt = Checkpointer(directory, keep=None, read_only=True)
  try:
    step = ckpt.latest_step() if step is None else int(step)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    return ckpt.restore_raw(step)["params"], step
  finally:
    ckpt.close()
