"""The figures of experiments/sweep.py, drawn from its sweep.json.

sweep.json holds (among others) `archs`, `modes` ("steps", "wall"),
`steps`, `wall_s`, `device` and
`summary` {mode: {arch: {delay: {"accuracy_mean", "accuracy_std",
"solved", "seeds", ...}}}} with accuracies in [0, 1] and the delays as
strings (JSON keys). `write_sweep_plots` writes one error-bar plot per
budget: accuracy_vs_delay_steps.png and accuracy_vs_delay_wall.png.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from jattn import workdir as workdir_lib
from jattn.plot import _mpl

SWEEP_FILE = "sweep.json"
CHANCE = 1 / 8  # alphabet of 8 symbols
_MARKERS = "osD^v<>ph"


def load_sweep_results(path) -> dict:
  """The results dict of a sweep.json (or of the folder holding it)."""
  path = workdir_lib.as_path(path)
  if path.is_dir():
    path = path / SWEEP_FILE
  return json.loads(path.read_text())


def _budget_label(results: Mapping, mode: str) -> str:
  if mode == "steps":
    return f"equal steps ({results['steps']} each)"
  return f"equal wall-clock ({results['wall_s']:.0f} s each)"


def plot_sweep_accuracy(results: Mapping, mode: str):
  """Mean held-out accuracy (%) against the delay, one line per
  architecture, error bars one sample standard deviation over seeds, for
  the budget `mode` ("steps" or "wall"). Architectures sit side by side
  around each delay so that their bars do not hide each other."""
  plt = _mpl.pyplot()
  summary = results["summary"].get(mode, {})
  archs = [a for a in results["archs"] if a in summary]
  delays = sorted({int(d) for a in archs for d in summary[a]})
  fig, ax = plt.subplots(figsize=(8, 4.5))
  width = 0.36 / max(len(archs), 1)
  for i, arch in enumerate(archs):
    cells = summary[arch]
    xs = [j + (i - (len(archs) - 1) / 2) * width
          for j, d in enumerate(delays) if str(d) in cells]
    found = [cells[str(d)] for d in delays if str(d) in cells]
    ax.errorbar(xs, [100 * c["accuracy_mean"] for c in found],
                yerr=[100 * c["accuracy_std"] for c in found],
                marker=_MARKERS[i % len(_MARKERS)], ms=5, capsize=3, lw=1,
                label=arch)
  ax.axhline(100 * CHANCE, color="grey", ls=":", lw=1)
  ax.annotate("chance (1/8)", (-0.5, 100 * CHANCE), xytext=(4, -11),
              textcoords="offset points", ha="left", fontsize=8,
              color="grey")
  ax.set_xticks(range(len(delays)), [str(d) for d in delays])
  ax.set_xlim(-0.5, len(delays) - 0.5)
  ax.set_ylim(0, 105)
  seeds = len(results.get("seeds", []))
  ax.set(xlabel="delay (blanks between the symbols and their copy)",
         ylabel="copy accuracy on fresh batches (%)",
         title=f"Copy task, {_budget_label(results, mode)}: mean ± std over "
               f"{seeds} seeds\n{results.get('device', '')}")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
            title="architecture", title_fontsize=8)
  fig.tight_layout()
  return fig


def write_sweep_plots(results, out) -> list[str]:
  """Writes OUT/accuracy_vs_delay_MODE.png for each budget of the results.

  Args:
    results: the results dict, or a path to sweep.json or its folder.
    out: the output folder (created if missing).

  Returns:
    The paths written.
  """
  if not isinstance(results, Mapping):
    results = load_sweep_results(results)
  out = workdir_lib.as_path(out)
  out.mkdir(parents=True, exist_ok=True)
  return [_mpl.save(plot_sweep_accuracy(results, mode),
                    out / f"accuracy_vs_delay_{mode}.png")
          for mode in results["modes"] if results["summary"].get(mode)]
