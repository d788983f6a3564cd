"""Measuring the CNN / RNN / self-attention comparison on the real layers.

* `xla_flops`: FLOPs from XLA's compiled cost analysis, scan bodies times
  their trip counts; `attention_flops`, `conv_flops`, `rnn_flops`: closed
  forms in the same convention.
* `critical_path_length`: sequential operations, the longest chain of
  dependent primitives in the jaxpr with scans unrolled.
* `dependency_pattern`, `hops`, `max_path_length`, `recurrence_step_graph`,
  `recurrence_steps`: maximum path length from Jacobian structure.
* `time_layer`, `time_call`: wall-clock forward and forward+backward.
* `growth_exponent`: log-log slope.
"""

from jattn.analysis.closed_form import attention_flops
from jattn.analysis.closed_form import conv_flops
from jattn.analysis.closed_form import dot_product_attention_flops
from jattn.analysis.closed_form import rnn_flops
from jattn.analysis.critical_path import critical_path_length
from jattn.analysis.fit import growth_exponent
from jattn.analysis.path_length import dependency_pattern
from jattn.analysis.path_length import hops
from jattn.analysis.path_length import max_path_length
from jattn.analysis.path_length import recurrence_step_graph
from jattn.analysis.path_length import recurrence_steps
from jattn.analysis.timing import device_name
from jattn.analysis.timing import time_call
from jattn.analysis.timing import time_layer
from jattn.analysis.xla_cost import compiled_cost
from jattn.analysis.xla_cost import xla_flops

__all__ = [
    "attention_flops", "compiled_cost", "conv_flops", "critical_path_length",
    "dependency_pattern", "device_name", "dot_product_attention_flops", "growth_exponent", "hops",
    "max_path_length", "recurrence_step_graph", "recurrence_steps",
    "rnn_flops", "time_call", "time_layer", "xla_flops",
]
