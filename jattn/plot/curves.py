"""Training curves from the metrics.jsonl that `jattn.train` writes.

Each line of WORKDIR/metrics.jsonl is one JSON object with "step" and some of
loss, accuracy (training batch), eval_loss, eval_accuracy (held-out batches)
and baseline_loss (the memoryless baseline, on every line); the last line of a
run has "final": true. A resumed run appends to the file, so a step may appear
twice: the later line wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from jattn import metrics as metrics_lib
from jattn.plot import _mpl

_SERIES = ("loss", "eval_loss", "baseline_loss", "accuracy", "eval_accuracy")


def _number(value) -> float:
  """A metric as a float ("nan" / "inf" strings included)."""
  return float(value) if isinstance(value, (int, float, str)) else math.nan


def metric_series(records: Sequence[Mapping]) -> dict:
  """{name: (steps, values)} for the curves, one value per step.

  Args:
    records: the dicts of a metrics.jsonl (`jattn.metrics.read_metrics`).

  Returns:
    For each of loss, eval_loss, baseline_loss, accuracy and eval_accuracy
    present in the records: two lists, the steps in increasing order and the
    value logged at each (the last one logged where a resumed run repeats a
    step). The "final" summary line is left out.
  """
  by_name: dict[str, dict[int, float]] = {}
  for record in records:
    if record.get("final") or "step" not in record:
      continue
    for name in _SERIES:
      if name in record:
        by_name.setdefault(name, {})[int(record["step"])] = _number(
            record[name])
  return {name: (sorted(values), [values[s] for s in sorted(values)])
          for name, values in by_name.items()}


def _records(run) -> list:
  if isinstance(run, (str, os.PathLike)):
    return metrics_lib.read_metrics(run)
  if isinstance(run, Sequence) and all(isinstance(r, Mapping) for r in run):
    return list(run)
  raise TypeError(
      "runs: expected a workdir path, a list of metric dicts or a dict of "
      f"them by label, got {type(run).__name__}")


def plot_training_curves(runs, *, title: str | None = None):
  """Loss against the memoryless baseline, and copy accuracy, by step.

  Args:
    runs: one run or several to overlay: a workdir (path to a folder with
      metrics.jsonl), a list of metric dicts, or a dict {label: either}.
    title: figure title.

  Returns:
    A matplotlib Figure with two axes: loss (training solid, held-out
    dashed, baseline dotted, drawn once for runs that share it; log scale
    with plain tick labels) and accuracy (training solid, held-out dashed).
    One run: train and eval in distinct colours, the baseline grey; several:
    one colour per run on a log step axis. Legends sit below the axes.
  """
  plt = _mpl.pyplot()
  from matplotlib import ticker  # noqa: PLC0415  (optional extra)
  labelled = (dict(runs) if isinstance(runs, Mapping)
              else {"": runs})
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.4))
  baselines = set()  # runs of the same task share one baseline line
  single = len(labelled) == 1
  for i, (label, run) in enumerate(labelled.items()):
    series = metric_series(_records(run))
    prefix = f"{label} " if label else ""
    for name, ax, style, text in (
        ("loss", ax_loss, "-", "train loss"),
        ("eval_loss", ax_loss, "--", "eval loss"),
        ("baseline_loss", ax_loss, ":", "memoryless baseline"),
        ("accuracy", ax_acc, "-", "train accuracy"),
        ("eval_accuracy", ax_acc, "--", "eval accuracy")):
      if name not in series:
        continue
      # One run: train and eval in colours of their own, the baseline grey;
      # several: a colour per run, the line style tells train from eval.
      if name == "baseline_loss":
        color = "grey"
      elif single:
        color = "C1" if name.startswith("eval") else "C0"
      else:
        color = f"C{i}"
      steps, values = series[name]
      if name == "baseline_loss" and len(set(values)) == 1:
        # A constant (one task): a horizontal line, once per value.
        if values[0] not in baselines:
          baselines.add(values[0])
          # Shared by the runs of one task: labelled by its value, not by
          # the name of the first run that has it.
          ax.axhline(values[0], ls=style, color=color,
                     label=f"{text} ({values[0]:.3g})")
        continue
      ax.plot(steps, values, style, color=color, label=prefix + text,
              marker="." if len(steps) < 30 else None)
  ax_loss.set(xlabel="step", ylabel="cross-entropy per token",
              yscale="log", title="loss vs memoryless baseline")
  # Plain numbers on the log axis, and no crowded minor labels.
  ax_loss.yaxis.set_major_formatter(ticker.FuncFormatter(
      lambda y, _: f"{y:g}"))
  ax_loss.yaxis.set_minor_formatter(ticker.NullFormatter())
  ax_acc.set(xlabel="step", ylabel="accuracy on scored positions",
             ylim=(-0.02, 1.02), title="accuracy")
  for ax in (ax_loss, ax_acc):
    if not single:
      # Runs of different lengths share a log step axis, so a run that
      # stopped after 100 steps is not squeezed against 0 beside one of
      # thousands.
      ax.set_xscale("log")
      ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3)
    # Below the axes, never over the curves.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=2, frameon=False)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig
