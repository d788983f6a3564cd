"""Lowering for GPU and TPU from this CPU host (no accelerator needed).

`lower(fn, *args, platform=...)` traces `fn` and lowers it for "cuda" or
"tpu" with `jit(fn).trace(*args).lower(lowering_platforms=(platform,))`;
for TPU inside an abstract mesh of one v5e or v6e device, so that Mosaic
kernels that ask for the chip's facts lower as on that chip. The returned
StableHLO text is what a kernel test inspects: the kernel's custom call is
there, the interpret-mode emulation is not.

cuDNN checks its version and the GPU's compute capability at trace time;
`fake_cudnn` (a fixture in tests/conftest.py) stubs both for a test.
"""

from __future__ import annotations

import dataclasses
import re

import jax

# What identifies each kernel in lowered StableHLO text.
MARKERS = {
    "cudnn": "__cudnn$fmha",
    "triton": "__gpu$xla.gpu.triton",
    "mosaic_gpu": "mosaic_gpu",
    "tpu": "tpu_custom_call",
    # Pallas interpret mode on TPU semantics runs through a CPU callback.
    "interpret_callback": "xla_ffi_python_cpu_callback",
}
TPU_KINDS = {"v5e": "TPU v5 lite", "v6e": "TPU v6 lite"}


def abstract_tpu_mesh(chip: str = "v5e"):
  """A one-device `AbstractMesh` whose device is a TPU of kind `chip`."""
  from jax.sharding import AbstractDevice, AbstractMesh, AxisType  # pylint: disable=g-import-not-at-top
  fields = {f.name for f in dataclasses.fields(AbstractDevice)}
  kwargs = dict(device_kind=TPU_KINDS[chip], num_cores=1)
  if "platform" in fields:  # jax >= 0.8
    kwargs["platform"] = "tpu"
  return AbstractMesh((1,), ("x",), (AxisType.Explicit,),
                      abstract_device=AbstractDevice(**kwargs))


def lower(fn, *args, platform: str, chip: str = "v5e") -> str:
  """StableHLO text of `jax.jit(fn)` lowered for `platform` ("cuda"/"tpu")."""
  traced = jax.jit(fn).trace(*args)
  if platform == "tpu":
    from jax.sharding import use_abstract_mesh  # pylint: disable=g-import-not-at-top
    with use_abstract_mesh(abstract_tpu_mesh(chip)):
      return traced.lower(lowering_platforms=("tpu",)).as_text()
  return traced.lower(lowering_platforms=(platform,)).as_text()


def custom_calls(text: str) -> list[str]:
  """The custom-call targets in lowered text, sorted, without repeats."""
  return sorted(set(re.findall(r"custom_call @([\w$.\-]+)", text)))


def count(text: str, kernel: str) -> int:
  """How many custom calls of `kernel` (a key of MARKERS) the text holds."""
  return text.count(f"custom_call @{MARKERS[kernel]}")
