"""Multi-device jattn on JAX's SPMD machinery: meshes, shardings, ring
attention.

  mesh.py    make_mesh / mesh_shape (axes "data", "seq", "model"), the
             sharding rules for params, optimizer states and batches, and
             shard_batch (jax.make_array_from_process_local_data).
  ring.py    ring attention: ring_attention (a batch of global arrays),
             ring_dot_product_attention (one example, vmap it) and
             ring_attention_shard (inside your own shard_map).
  blocks.py  ring_core (ring attention as an attention_fn core),
             ring_self_attention and ring_transformer_block: jattn's
             layers with that core (jattn.models uses them when
             the current mesh has seq > 1).
"""

from jattn.parallel.blocks import ring_core
from jattn.parallel.blocks import ring_self_attention
from jattn.parallel.blocks import ring_transformer_block
from jattn.parallel.blocks import seq_parallel_active
from jattn.parallel.mesh import AXES
from jattn.parallel.mesh import axis_size
from jattn.parallel.mesh import batch_shardings
from jattn.parallel.mesh import batch_spec
from jattn.parallel.mesh import constrain
from jattn.parallel.mesh import make_mesh
from jattn.parallel.mesh import mesh_shape
from jattn.parallel.mesh import param_shardings
from jattn.parallel.mesh import replicated
from jattn.parallel.mesh import shard_batch
from jattn.parallel.ring import resolve_mesh
from jattn.parallel.ring import ring_attention
from jattn.parallel.ring import ring_attention_shard
from jattn.parallel.ring import ring_dot_product_attention

__all__ = [
    "AXES",
    "axis_size",
    "batch_shardings",
    "batch_spec",
    "constrain",
    "make_mesh",
    "mesh_shape",
    "param_shardings",
    "replicated",
    "resolve_mesh",
    "ring_core",
    "ring_attention",
    "ring_attention_shard",
    "ring_dot_product_attention",
    "ring_self_attention",
    "ring_transformer_block",
    "seq_parallel_active",
    "shard_batch",
]
