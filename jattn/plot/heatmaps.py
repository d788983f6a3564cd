"""Attention heatmaps of a trained copy-task model.

For a model of kind "attention" (`jattn.models`), `copy_attention` runs one
copy-task example (drawn with its own key, not a training batch's) through
`jattn.models.attention_weights` and finds the expected copy pattern: the
query at the k-th copy position should attend to the key holding the k-th
symbol read. For the fixed-delay task that is the diagonal shifted by
delay + num_symbols positions; for the variable and selective variants it is
read off the example. `plot_attention` draws the (query, key) weights of any
layer and head and marks those pairs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import jax
import numpy as np

from jattn import models
from jattn import tasks
from jattn.plot import _mpl


def _params(params_or_state):
  """Model params from params, a training state {"params", ...}, or the
  (params, step) pair of `jattn.checkpoint.load_params`."""
  if isinstance(params_or_state, tuple) and len(params_or_state) == 2:
    params_or_state = params_or_state[0]
  if (isinstance(params_or_state, Mapping) and "params" in params_or_state
      and "embed" not in params_or_state):
    params_or_state = params_or_state["params"]
  return params_or_state


# One compiled program per task, instead of one per random op.
_make_batch = jax.jit(tasks.make_batch, static_argnums=(0, 2))


@functools.lru_cache(maxsize=8)
def _weights_fn(model_json: str):
  """`attention_weights` jitted for one model config: redrawing a figure (or
  another layer or head) reuses the compiled function."""
  return jax.jit(functools.partial(models.attention_weights,
                                   model_config=json.loads(model_json)))


def copy_example(task, *, seed: int = 0) -> dict:
  """One copy-task example as NumPy arrays of shape (N,).

  Args:
    task: a `jattn.tasks.CopyTask` or its config section.
    seed: the example is `make_batch(task, jax.random.key(seed), 1)[0]`.

  Returns:
    {"inputs", "targets", "token_mask", "copy_mask", "weights"}.
  """
  task = tasks.from_config(task)
  batch = _make_batch(task, jax.random.key(seed), 1)
  return {name: np.asarray(value[0]) for name, value in batch.items()}


def copy_pairs(example: Mapping, task) -> tuple[np.ndarray, np.ndarray]:
  """(queries, keys): the scored positions and, for each, the position
  holding the token it must reproduce.

  Copy tasks: the k-th copy position reproduces the k-th symbol read. MQAR
  and induction heads: the scored position's input (a queried key, the
  trigger) occurred once before, and the answer is the token right after
  that first occurrence (the pattern an induction head attends to).
  """
  task = tasks.from_config(task)
  inputs_N = np.asarray(example["inputs"])
  queries = np.flatnonzero(np.asarray(example["copy_mask"]))
  if isinstance(task, tasks.CopyTask):
    is_symbol = (inputs_N >= 1) & (inputs_N <= task.alphabet_size)
    keys = np.flatnonzero(is_symbol)[:len(queries)]
    return queries, keys
  keys = []
  for q in queries:
    earlier = np.flatnonzero(inputs_N[:q] == inputs_N[q])
    keys.append(earlier[0] + 1 if len(earlier) else q)
  return queries, np.asarray(keys, dtype=np.int64)


def copy_attention(params, config, *, seed: int = 0) -> dict:
  """Attention weights of a trained attention model on one copy example.

  Args:
    params: the model params (`jattn.checkpoint.load_params(workdir)[0]`),
      that pair itself, or a training state with a "params" entry.
    config: the run's config (sections `task` and `model`).
    seed: which example (`copy_example`).

  Returns:
    {"weights": float32 (L, H, N, N) NumPy array (`attention_weights`),
     "example": `copy_example(...)`, "queries", "keys": `copy_pairs(...)`,
     "copy_score": (L, H) the mean weight each head gives to the expected
     source of each copy position (1 = a perfect copy head)}.
  """
  task = tasks.from_config(config.task)
  example = copy_example(task, seed=seed)
  model = config.model
  model_json = json.dumps(dict(model.to_dict() if hasattr(model, "to_dict")
                               else model), sort_keys=True)
  weights_LHNN = np.asarray(_weights_fn(model_json)(
      _params(params), example["inputs"], example["token_mask"]))
  queries, keys = copy_pairs(example, task)
  score_LH = (weights_LHNN[:, :, queries, keys].mean(axis=-1)
              if len(queries) else np.zeros(weights_LHNN.shape[:2]))
  return {"weights": weights_LHNN, "example": example, "queries": queries,
          "keys": keys, "copy_score": score_LH}


def _select(weights, layer: int, head: int) -> np.ndarray:
  """The (N, N) map of one layer and head of (N, N), (H, N, N) or
  (L, H, N, N) weights."""
  w = np.asarray(weights)
  if w.ndim not in (2, 3, 4) or w.shape[-1] != w.shape[-2]:
    raise ValueError(
        "weights: expected an (N, N), (H, N, N) or (L, H, N, N) array, got "
        f"shape {w.shape}")
  if w.ndim == 4:
    if not 0 <= layer < w.shape[0]:
      raise ValueError(
          f"layer: expected an int in [0, {w.shape[0]}), got {layer}")
    w = w[layer]
  if w.ndim == 3:
    if not 0 <= head < w.shape[0]:
      raise ValueError(
          f"head: expected an int in [0, {w.shape[0]}), got {head}")
    w = w[head]
  return w


def _crop(pairs, n: int, margin: int = 3) -> tuple[slice, slice]:
  """(rows, columns) around the marked pairs, `margin` cells each side."""
  queries, keys = (np.asarray(p) for p in pairs)
  rows = slice(max(int(queries.min()) - margin, 0),
               min(int(queries.max()) + margin + 1, n))
  cols = slice(max(int(keys.min()) - margin, 0),
               min(int(keys.max()) + margin + 1, n))
  return rows, cols


def plot_attention(weights, *, layer: int = 0, head: int = 0, pairs=None,
                   crop: bool = False, ax=None, title: str | None = None,
                   colorbar: bool = True):
  """A heatmap of one head's attention weights: row = query, column = key.

  Args:
    weights: (N, N), (H, N, N) or (L, H, N, N) weights, e.g.
      `copy_attention(...)["weights"]` or `jattn.models.attention_weights`.
    layer, head: which map (ignored for dimensions `weights` lacks).
    pairs: optional (queries, keys) positions to mark, e.g. the expected
      copy diagonal `copy_pairs(...)`; each cell is outlined in red (its
      colour stays visible).
    crop: show only the rows of the marked queries and the columns of
      their keys (a few cells around them), with the axes in sequence
      positions; without pairs it does nothing.
    ax: axes to draw on (default: a new figure).
    title: default "layer L, head H".
    colorbar: draw a labelled colour bar beside the map (the colour scale
      runs from 0 to the shown map's maximum).

  Returns:
    The matplotlib Figure (its first image holds the plotted array).
  """
  plt = _mpl.pyplot()
  w_NN = _select(weights, layer, head)
  if ax is None:
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
  else:
    fig = ax.figure
  has_pairs = pairs is not None and len(pairs[0])
  rows, cols = (_crop(pairs, w_NN.shape[0]) if crop and has_pairs
                else (slice(0, w_NN.shape[0]), slice(0, w_NN.shape[1])))
  shown = w_NN[rows, cols]
  image = ax.imshow(shown, cmap="viridis", vmin=0.0, interpolation="nearest",
                    aspect="auto" if crop else "equal",
                    extent=(cols.start - 0.5, cols.stop - 0.5,
                            rows.stop - 0.5, rows.start - 0.5))
  if colorbar:
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("attention weight")
  xlabel = "key position"
  if has_pairs:
    from matplotlib import patches  # noqa: PLC0415  (optional extra)
    for q, k in zip(*pairs):
      ax.add_patch(patches.Rectangle((k - 0.5, q - 0.5), 1, 1, fill=False,
                                     edgecolor="red", lw=0.9))
    xlabel += " (red outline: expected source)"
  ax.set(xlabel=xlabel, ylabel="query position",
         title=title if title is not None else f"layer {layer}, head {head}")
  return fig


def best_head(copy_score, layer: int | None = None) -> tuple[int, int]:
  """(layer, head) with the highest copy score (within `layer` if given)."""
  score_LH = np.asarray(copy_score)
  if layer is not None:
    return layer, int(np.argmax(score_LH[layer]))
  l, h = np.unravel_index(int(np.argmax(score_LH)), score_LH.shape)
  return int(l), int(h)


def plot_copy_attention(params, config, *, layer: int | None = None,
                        head: int | None = None, seed: int = 0,
                        found: dict | None = None):
  """The attention heatmap of a trained model on one copy-task example, with
  the expected copy pairs marked (a shifted diagonal for the fixed task).

  Args:
    params, config, seed: as in `copy_attention`.
    layer, head: which map; None picks the one with the highest copy score
      (the head that learned to copy).
    found: the result of `copy_attention(params, config, seed=seed)` if
      already computed (then params, config and seed are not read).

  Returns:
    The matplotlib Figure.
  """
  if found is None:
    found = copy_attention(params, config, seed=seed)
  if head is None:
    layer, head = best_head(found["copy_score"], layer)
  elif layer is None:
    layer = int(np.argmax(found["copy_score"][:, head]))
  score = float(found["copy_score"][layer, head])
  return plot_attention(
      found["weights"], layer=layer, head=head,
      pairs=(found["queries"], found["keys"]), crop=True,
      title=f"layer {layer}, head {head}: copy score {score:.2f} "
            "(scored rows, their source columns)")


def plot_attention_grid(weights, *, pairs=None, copy_score=None,
                        title: str | None = None):
  """Every layer (rows) and head (columns) of (L, H, N, N) weights.

  Each panel's colors run from 0 to its own maximum, given in its title.

  Args:
    weights: (L, H, N, N) weights.
    pairs: optional (queries, keys) to mark in every panel.
    copy_score: optional (L, H) scores shown in the panel titles.
    title: figure title.

  Returns:
    The matplotlib Figure.
  """
  plt = _mpl.pyplot()
  w = np.asarray(weights)
  if w.ndim != 4:
    raise ValueError(
        f"weights: expected an (L, H, N, N) array, got shape {w.shape}")
  L, H = w.shape[:2]
  fig, axes = plt.subplots(L, H, figsize=(3 * H, 3.1 * L + 0.4),
                           squeeze=False)
  for l in range(L):
    for h in range(H):
      text = f"layer {l}, head {h}\nmax {w[l, h].max():.2f}"
      if copy_score is not None:
        text += f", copy score {float(np.asarray(copy_score)[l, h]):.2f}"
      ax = axes[l, h]
      plot_attention(w, layer=l, head=h, pairs=pairs, ax=ax, title=text,
                     colorbar=False)
      ax.title.set_fontsize(8)
      ax.set(xlabel="key" if l == L - 1 else "",
             ylabel="query" if h == 0 else "")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig
