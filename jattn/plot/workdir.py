"""Every plot a run's folder allows, written as PNGs (`python -m jattn.plot`).

  WORKDIR/metrics.jsonl       -> training_curves.png
  WORKDIR/checkpoints/ + the run's config (model kind "attention")
                              -> attention_heads.png (every layer and head)
                                 and attention_copy_head.png (the head with
                                 the highest copy score)
  WORKDIR/complexity.json     -> flops_vs_n.png, time_vs_n.png,
                                 path_length_vs_n.png (and subquadratic_vs_n.png)
  WORKDIR/copy.json           -> accuracy_vs_delay.png (and
                                 accuracy_vs_symbols.png,
                                 gradient_vs_position.png)
  WORKDIR/sweep.json          -> accuracy_vs_delay_steps.png,
                                 accuracy_vs_delay_wall.png
"""

from __future__ import annotations

import os

import ml_collections

from jattn import checkpoint as checkpoint_lib
from jattn import metrics as metrics_lib
from jattn import run_record
from jattn import workdir as workdir_lib
from jattn.plot import _mpl
from jattn.plot import complexity
from jattn.plot import copy_task
from jattn.plot import curves
from jattn.plot import heatmaps
from jattn.plot import sweep


def stored_config(workdir):
  """The config recorded in WORKDIR/config.json (`jattn.run_record`) as a
  ConfigDict, or None for a workdir without one."""
  record = run_record.read(workdir)
  if record is None:
    return None
  return ml_collections.ConfigDict(record["config"])


def run_label(workdir, config) -> str:
  """'attention, copy task, delay 100' from the config (the folder's name
  when there is none)."""
  if config is None:
    return workdir_lib.as_path(workdir).name
  task = config.get("task", {})
  parts = [str(config.get("model", {}).get("kind", "?")),
           f"{task.get('name', task.get('variant', 'copy'))} task"]
  if "delay" in task:
    parts.append(f"delay {task['delay']}")
  return ", ".join(parts)


def write_plots(workdir, *, out=None, config=None, seed: int = 0,
                say=print) -> list[str]:
  """Writes the PNGs of the module docstring; returns their paths.

  Args:
    workdir: a training run's folder, or a folder with complexity.json or
      copy.json.
    out: where to write (default: `workdir`, next to the metrics).
    config: the run's config (sections task and model), needed for the
      attention heatmaps; default: the one stored in WORKDIR/config.json
      (without either they are skipped).
    seed: the copy-task example of the heatmaps.
    say: where notes on skipped plots go.

  Raises:
    FileNotFoundError: `workdir` holds nothing to plot.
  """
  workdir = workdir_lib.as_path(workdir)
  out = workdir if out is None else workdir_lib.as_path(out)
  has_metrics = (workdir / metrics_lib.METRICS_FILE).is_file()
  has_checkpoints = checkpoint_lib.checkpoint_dir(workdir).is_dir()
  has_complexity = (workdir / complexity.COMPLEXITY_FILE).is_file()
  has_copy = (workdir / copy_task.COPY_FILE).is_file()
  has_sweep = (workdir / sweep.SWEEP_FILE).is_file()
  if not (has_metrics or has_checkpoints or has_complexity or has_copy
          or has_sweep):
    raise FileNotFoundError(
        f"workdir: expected a folder with {metrics_lib.METRICS_FILE}, "
        f"{checkpoint_lib.CHECKPOINT_DIR}/, {complexity.COMPLEXITY_FILE}, "
        f"{copy_task.COPY_FILE} or {sweep.SWEEP_FILE}, got "
        f"{os.fspath(workdir)!r}")
  out.mkdir(parents=True, exist_ok=True)
  written = []
  if config is None:
    config = stored_config(workdir)
  if has_metrics:
    written.append(_mpl.save(
        curves.plot_training_curves(workdir, title=run_label(workdir, config)),
        out / "training_curves.png"))
  if has_checkpoints and config is None:
    say("jattn.plot: no config given and no config.json in the workdir: "
        "skipping the attention heatmaps (pass the run's --config)")
  elif has_checkpoints and config.model.kind != "attention":
    say(f"jattn.plot: model kind {config.model.kind!r} has no attention "
        "weights: skipping the heatmaps")
  elif has_checkpoints:
    params, step = checkpoint_lib.load_params(workdir)
    found = heatmaps.copy_attention(params, config, seed=seed)
    pairs = (found["queries"], found["keys"])
    grid = heatmaps.plot_attention_grid(
        found["weights"], pairs=pairs, copy_score=found["copy_score"],
        title=f"{run_label(workdir, config)}, step {step}: attention weights (red "
              "outlines: expected copy source)")
    written.append(_mpl.save(grid, out / "attention_heads.png"))
    written.append(_mpl.save(
        heatmaps.plot_copy_attention(params, config, found=found),
        out / "attention_copy_head.png"))
  if has_complexity:
    written += complexity.write_complexity_plots(workdir, out)
  if has_copy:
    written += copy_task.write_copy_plots(workdir, out)
  if has_sweep:
    written += sweep.write_sweep_plots(workdir, out)
  return written
