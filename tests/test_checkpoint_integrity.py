"""Checkpoint integrity: a record of checksums written after the data; a
damaged, unreadable or unfinished newest step is skipped, in one line, for
the newest good one, and no checkpoint is deleted."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from jattn import checkpoint

pytestmark = pytest.mark.floor


def _state(step):
  return {"step": jnp.asarray(step, jnp.int32),
          "params": {"w": jnp.arange(64.0).reshape(8, 8) + step}}


def _saved(tmp_path, steps=(30, 60, 90)):
  directory = tmp_path / "checkpoints"
  with checkpoint.Checkpointer(directory, keep=None) as ckpt:
    for step in steps:
      ckpt.save(step, _state(step), force=True)
      ckpt.wait()
  return directory


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  files = [p for p in folder.rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _restore(directory):
  lines = []
  with checkpoint.Checkpointer(directory, keep=None) as ckpt:
    state, step = ckpt.restore_verified(_state(0), log=lines.append)
    steps = ckpt.all_steps()
  return state, step, lines, steps


def test_every_saved_step_has_a_record_and_restores_verified(tmp_path):
  directory = _saved(tmp_path)
  records = sorted(p.name for p in (tmp_path / "checkpoints_integrity").iterdir())
  assert records == ["30.json", "60.json", "90.json"]
  state, step, lines, _ = _restore(directory)
  assert step == 90 and lines == []
  np.testing.assert_array_equal(state["params"]["w"], _state(90)["params"]["w"])


def test_flipped_bytes_in_the_newest_step_fall_back_to_the_previous(tmp_path):
  directory = _saved(tmp_path)
  victim = _largest_file(directory / "90")
  data = bytearray(victim.read_bytes())
  for i in range(len(data) // 2, min(len(data), len(data) // 2 + 64)):
    data[i] ^= 0xFF
  victim.write_bytes(bytes(data))
  state, step, lines, steps = _restore(directory)
  assert step == 60, lines
  assert len(lines) == 2 and "skipping step 90" in lines[0], lines
  # Moved aside, not deleted, so that the resumed run can save step 90 again.
  assert "moved step 90" in lines[1], lines
  assert steps == [30, 60]
  moved = tmp_path / "checkpoints_skipped" / "90"
  assert (moved / "checkpoint").is_dir() and (moved / "integrity.json").is_file()
  np.testing.assert_array_equal(state["params"]["w"], _state(60)["params"]["w"])


def test_a_step_without_record_or_an_empty_step_folder_is_skipped(tmp_path):
  directory = _saved(tmp_path)
  (tmp_path / "checkpoints_integrity" / "90.json").unlink()
  (directory / "120").mkdir()                      # an empty newer step
  _, step, lines, _ = _restore(directory)
  assert step == 60
  assert any("skipping step 90" in l and "no integrity record" in l
             for l in lines), lines


def test_no_good_step_starts_afresh_and_keeps_the_step_aside(tmp_path):
  directory = _saved(tmp_path, steps=(30,))
  (tmp_path / "checkpoints_integrity" / "30.json").unlink()
  state, step, lines, steps = _restore(directory)
  assert step == 0 and steps == [], lines
  assert any("starting afresh" in l for l in lines), lines
  np.testing.assert_array_equal(state["params"]["w"], _state(0)["params"]["w"])
  assert (tmp_path / "checkpoints_skipped" / "30" / "checkpoint").is_dir()


def test_the_record_is_written_by_the_save_itself_not_the_next_one(tmp_path):
  # A run killed between two saves must leave its last step verifiable.
  directory = tmp_path / "checkpoints"
  ckpt = checkpoint.Checkpointer(directory, keep=None)
  ckpt.save(30, _state(30), force=True)
  ckpt._manager.wait_until_finished()  # pylint: disable=protected-access
  assert (tmp_path / "checkpoints_integrity" / "30.json").is_file()
  ckpt.close()
