"""Shared test helpers: loading files that are not importable packages,
the two relative-error metrics, random inputs."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_module(relative_path: str, name: str):
  """Imports ROOT/relative_path as a module (configs/, experiments/)."""
  spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def copy_config_module():
  """configs/copy.py (not on sys.path: `copy` would shadow the stdlib)."""
  return load_module("configs/copy.py", "copy_config")


def get_config(arg=None, *, num_data_devices=1):
  """configs/copy.py's config, training on `num_data_devices` devices.

  conftest fakes 8 CPU devices for the sharding tests; the config's default
  (every local device on the data axis) would make every other training
  test 8-way data-parallel on 2 cores, twice as slow for nothing. Pass
  num_data_devices=-1 for the config's own default.
  """
  config = copy_config_module().get_config(arg)
  if num_data_devices != -1:
    config.mesh.data = num_data_devices
  return config


def max_rel_error(actual, expected):
  """max |a - e| / max(max |e|, tiny) in float64: a scale-aware relative
  error, the largest entry's error over the tensor's scale."""
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  if not actual.size:
    return 0.0
  denom = max(np.max(np.abs(expected)), 1e-30)
  return float(np.max(np.abs(actual - expected)) / denom)


def norm_rel_error(actual, expected):
  """||actual - expected|| / ||expected|| (Frobenius norms, in float64)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected)
  return np.linalg.norm(actual - expected) / max(np.linalg.norm(expected),
                                                 1e-30)


def random_qkv(seed, L, M, H, G, K, dtype=np.float32, std=1.0):
  """NumPy q (L, H, K), k (M, G, K), v (M, G, K), normal with `std`."""
  rng = np.random.default_rng(seed)
  return tuple((std * rng.normal(size=shape)).astype(dtype)
               for shape in ((L, H, K), (M, G, K), (M, G, K)))


def random_params(init_fn, seed=0, scale=0.3):
  """Params with the shapes of `init_fn(key)`, filled from NumPy (eager
  jax.random initialisers compile every op: seconds per test)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(init_fn, jax.random.key(0))
  return jax.tree.map(
      lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)
