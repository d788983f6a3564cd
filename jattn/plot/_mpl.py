"""matplotlib, imported only when a plot is drawn (it is an optional extra)."""

from __future__ import annotations

import io
import os
import sys

from jattn import workdir as workdir_lib

INSTALL_HINT = ("jattn.plot needs matplotlib, an optional extra of jattn: "
                "pip install matplotlib (or, in a checkout of jattn, "
                "pip install -e '.[plot]')")


def _headless() -> bool:
  """No display to open windows on, and no backend chosen by the user or a
  notebook (Jupyter and Colab set MPLBACKEND or load ipykernel)."""
  if os.environ.get("MPLBACKEND") or "ipykernel" in sys.modules:
    return False
  if sys.platform in ("darwin", "win32"):
    return False
  return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pyplot(*, force_agg: bool = False):
  """matplotlib.pyplot, with the Agg backend when there is no display (or
  when `force_agg`, for writing files only).

  Raises:
    ImportError: matplotlib is not installed; the message names the extra.
  """
  try:
    import matplotlib  # noqa: PLC0415
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e
  if force_agg or _headless():
    matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  return plt


def save(fig, path) -> str:
  """Writes `fig` to `path` (PNG by its suffix; a local path or a URI such
  as gs://..., `jattn.workdir`), closes it, returns the path."""
  path = os.fspath(path)
  if workdir_lib.is_remote(path):
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format=path.rsplit(".", 1)[-1])
    workdir_lib.as_path(path).write_bytes(buffer.getvalue())
  else:
    fig.savefig(path, dpi=120)
  pyplot().close(fig)
  return path
