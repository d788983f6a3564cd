"""Measuring the CNN / RNN / self-attention comparison on the real layers.

* `xla_flops`: FLOPs from XLA's compiled cost analysis, scan bodies times
  their trip counts; `attention_flops`, `conv_flops`, `rnn_flops`: closed
  forms in the same convention.
* `critical_path_length`: sequential operations, the longest chain of
  dependent primitives in the jaxpr with scans unrolled.
* `dependency_pattern`, `hops`, `max_path_length`: maximum path length of a
  stack of layers from Jacobian structure; `recurrence_step_graph`,
  `recurrence_steps`: an RNN's, constructed from its 2-token pattern.
* `jaxpr_distances`, `jaxpr_path_length`: maximum path length measured on
  the unrolled jaxpr: the fewest dependent primitives from input position j
  to output position i.
* `linear_recurrence_scan`, `linear_recurrence_associative`: one linear
  recurrence computed sequentially and as a parallel prefix.
* `executed_cost`: FLOPs and critical path of one call as it runs, every
  `while` trip and `cond` branch taken included (XLA counts loop bodies once).
* `time_layer`, `time_call`, `time_samples`: wall-clock forward and
  forward+backward (median, with the min and max of the samples).
* `describe_device`: the device and the host's load, for results files.
* `growth_exponent`: log-log slope.
"""

from jattn.analysis.closed_form import attention_flops
from jattn.analysis.closed_form import conv_flops
from jattn.analysis.closed_form import dot_product_attention_flops
from jattn.analysis.closed_form import rnn_flops
from jattn.analysis.critical_path import critical_path_length
from jattn.analysis.executed_cost import executed_cost
from jattn.analysis.fit import growth_exponent
from jattn.analysis.jaxpr_path import jaxpr_distances
from jattn.analysis.jaxpr_path import jaxpr_path_length
from jattn.analysis.machine import describe_device
from jattn.analysis.path_length import dependency_pattern
from jattn.analysis.path_length import hops
from jattn.analysis.path_length import max_path_length
from jattn.analysis.path_length import recurrence_step_graph
from jattn.analysis.path_length import recurrence_steps
from jattn.analysis.recurrences import linear_recurrence_associative
from jattn.analysis.recurrences import linear_recurrence_scan
from jattn.analysis.timing import time_call
from jattn.analysis.timing import time_layer
from jattn.analysis.timing import time_samples
from jattn.analysis.xla_cost import compiled_cost
from jattn.analysis.xla_cost import xla_flops

__all__ = [
    "attention_flops", "compiled_cost", "conv_flops", "critical_path_length",
    "dependency_pattern", "describe_device", "dot_product_attention_flops",
    "executed_cost", "growth_exponent", "hops", "jaxpr_distances",
    "jaxpr_path_length", "linear_recurrence_associative",
    "linear_recurrence_scan", "max_path_length", "recurrence_step_graph",
    "recurrence_steps", "rnn_flops", "time_call", "time_layer",
    "time_samples", "xla_flops",
]
