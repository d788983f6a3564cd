"""Shared test helpers: loading files that are not importable packages."""

import importlib.util
import pathlib

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
