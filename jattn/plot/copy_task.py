"""The figures of experiments/copy_task.py, drawn from its results.

`experiments/copy_task.py` writes OUT/copy.json with (among others):

  device, archs
  summary         {arch: {delay: {"accuracy_mean", ...}}}  (accuracy in [0, 1])
  gradient_delay, gradients  (optional) {arch: {"init": [N floats],
                  "trained": [N floats]}}: |d copy loss / d x_j| per input
                  position j
  symbols         (optional) {"delay", "archs",
                  "summary": {arch: {num_symbols: {"accuracy_mean", ...}}}}

JSON turns the integer keys of the summaries into strings; these functions
accept both. `write_copy_plots` writes accuracy_vs_delay.png and, when the
results have them, accuracy_vs_symbols.png and gradient_vs_position.png.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from jattn import workdir as workdir_lib
from jattn.plot import _mpl

COPY_FILE = "copy.json"
CHANCE = 1 / 8  # alphabet of 8 symbols


def load_copy_results(path) -> dict:
  """The results dict of a copy.json (or of the folder holding it)."""
  path = workdir_lib.as_path(path)
  if path.is_dir():
    path = path / COPY_FILE
  return json.loads(path.read_text())


def _accuracy_axes(summary: Mapping, archs, xlabel: str, title: str):
  """Held-out accuracy (%) per arch against the int keys of `summary`."""
  plt = _mpl.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for arch in archs:
    by_x = dict(sorted((int(k), v) for k, v in summary.get(arch, {}).items()))
    ax.plot(list(by_x), [100 * c["accuracy_mean"] for c in by_x.values()],
            "o-", label=arch)
  ax.axhline(100 * CHANCE, color="grey", ls=":", lw=1, label="chance (1/8)")
  ax.set(xscale="log", xlabel=xlabel, ylabel="held-out copy accuracy (%)",
         title=title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_accuracy_vs_delay(results: Mapping):
  """Mean final held-out accuracy of each architecture against the delay."""
  return _accuracy_axes(results["summary"], results["archs"], "delay",
                        "Copy task under a fixed budget\n"
                        f"{results.get('device', '')}")


def plot_accuracy_vs_symbols(results: Mapping):
  """Mean final accuracy against the number of symbols to copy (the
  results' "symbols" sweep, at one delay)."""
  sweep = results["symbols"]
  return _accuracy_axes(sweep["summary"], sweep["archs"], "symbols to copy S",
                        f"Copy task, delay {sweep['delay']}, fixed budget\n"
                        f"{results.get('device', '')}")


def plot_gradient_vs_position(results: Mapping):
  """Gradient norm of the copy loss per input position, at initialisation
  and after training (log scale)."""
  plt = _mpl.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for key, ax in zip(("init", "trained"), axes):
    for arch, by_key in results["gradients"].items():
      g_N = np.asarray(by_key[key], np.float64)
      ax.semilogy(np.arange(len(g_N)), g_N + 1e-30, label=arch)
    ax.set(xlabel="input position", title=f"{key}: |d copy loss / d x_j|, "
           f"delay {results['gradient_delay']}")
  axes[0].set_ylabel("gradient norm")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  return fig


def write_copy_plots(results, out) -> list[str]:
  """Writes OUT/accuracy_vs_delay.png and, where the results have them,
  accuracy_vs_symbols.png and gradient_vs_position.png.

  Args:
    results: the results dict, or a path to copy.json or its folder.
    out: the output folder (created if missing).

  Returns:
    The paths written.
  """
  if not isinstance(results, Mapping):
    results = load_copy_results(results)
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  figures = [("accuracy_vs_delay.png", plot_accuracy_vs_delay)]
  if results.get("symbols"):
    figures.append(("accuracy_vs_symbols.png", plot_accuracy_vs_symbols))
  if results.get("gradients"):
    figures.append(("gradient_vs_position.png", plot_gradient_vs_position))
  return [_mpl.save(draw(results), out / name) for name, draw in figures]
