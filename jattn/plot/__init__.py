"""Plots of jattn runs and measurements (needs the `plot` extra: matplotlib).

  pip install -e ".[plot]"
  python -m jattn.plot WORKDIR            # PNGs next to WORKDIR/metrics.jsonl

matplotlib is imported only when a figure is drawn, with the Agg backend when
there is no display; each plot_* function returns a matplotlib Figure.

  plot_training_curves(runs)   loss vs the memoryless baseline, accuracy
  plot_copy_attention(params, config, layer=None, head=None)
                               one head's attention on a copy-task example,
                               expected copy pairs marked
  plot_attention(weights, layer=, head=, pairs=)   any (L, H, N, N) weights
  plot_attention_grid(weights)  every layer and head
  plot_flops_vs_n / plot_time_vs_n / plot_path_length_vs_n /
  plot_subquadratic_vs_n(results)  the figures of experiments/complexity.py
  plot_accuracy_vs_delay / plot_accuracy_vs_symbols /
  plot_gradient_vs_position(results)
                               the figures of experiments/copy_task.py
  plot_sweep_accuracy(results, mode)  the error-bar figures of
                               experiments/sweep.py
  write_complexity_plots / write_copy_plots / write_sweep_plots(results, out)
                               an experiment's PNGs from its results JSON
  write_plots(workdir, out=, config=)   all of the above a folder allows
"""

from jattn.plot.complexity import load_results
from jattn.plot.complexity import plot_flops_vs_n
from jattn.plot.complexity import plot_path_length_vs_n
from jattn.plot.complexity import plot_time_vs_n
from jattn.plot.complexity import plot_subquadratic_vs_n
from jattn.plot.complexity import write_complexity_plots
from jattn.plot.copy_task import load_copy_results
from jattn.plot.copy_task import plot_accuracy_vs_delay
from jattn.plot.copy_task import plot_accuracy_vs_symbols
from jattn.plot.copy_task import plot_gradient_vs_position
from jattn.plot.copy_task import write_copy_plots
from jattn.plot.curves import metric_series
from jattn.plot.curves import plot_training_curves
from jattn.plot.heatmaps import best_head
from jattn.plot.heatmaps import copy_attention
from jattn.plot.heatmaps import copy_example
from jattn.plot.heatmaps import copy_pairs
from jattn.plot.heatmaps import plot_attention
from jattn.plot.heatmaps import plot_attention_grid
from jattn.plot.heatmaps import plot_copy_attention
from jattn.plot.sweep import load_sweep_results
from jattn.plot.sweep import plot_sweep_accuracy
from jattn.plot.sweep import write_sweep_plots
from jattn.plot.workdir import write_plots

__all__ = [
    "best_head",
    "copy_attention",
    "copy_example",
    "copy_pairs",
    "load_copy_results",
    "load_results",
    "load_sweep_results",
    "metric_series",
    "plot_accuracy_vs_delay",
    "plot_accuracy_vs_symbols",
    "plot_attention",
    "plot_attention_grid",
    "plot_copy_attention",
    "plot_flops_vs_n",
    "plot_sweep_accuracy",
    "plot_gradient_vs_position",
    "plot_path_length_vs_n",
    "plot_time_vs_n",
    "plot_training_curves",
    "plot_subquadratic_vs_n",
    "write_complexity_plots",
    "write_copy_plots",
    "write_plots",
    "write_sweep_plots",
]
