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
  plot_flops_vs_n / plot_time_vs_n / plot_path_length_vs_n(results)
                               the figures of experiments/complexity.py
  write_plots(workdir, out=, config=)   all of the above a folder allows
"""

from jattn.plot.complexity import load_results
from jattn.plot.complexity import plot_flops_vs_n
from jattn.plot.complexity import plot_path_length_vs_n
from jattn.plot.complexity import plot_time_vs_n
from jattn.plot.complexity import write_complexity_plots
from jattn.plot.curves import metric_series
from jattn.plot.curves import plot_training_curves
from jattn.plot.heatmaps import best_head
from jattn.plot.heatmaps import copy_attention
from jattn.plot.heatmaps import copy_example
from jattn.plot.heatmaps import copy_pairs
from jattn.plot.heatmaps import plot_attention
from jattn.plot.heatmaps import plot_attention_grid
from jattn.plot.heatmaps import plot_copy_attention
from jattn.plot.workdir import write_plots

__all__ = [
    "best_head",
    "copy_attention",
    "copy_example",
    "copy_pairs",
    "load_results",
    "metric_series",
    "plot_attention",
    "plot_attention_grid",
    "plot_copy_attention",
    "plot_flops_vs_n",
    "plot_path_length_vs_n",
    "plot_time_vs_n",
    "plot_training_curves",
    "write_complexity_plots",
    "write_plots",
]
