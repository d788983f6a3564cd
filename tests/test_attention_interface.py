"""One attention interface: every core has the core signature, plugs into the
one projection layer, and refuses what it cannot express by name."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn
from jattn import _compat
from jattn import models
from jattn import parallel
from jattn.attention import blockwise
from jattn.attention import dense
from jattn.attention import linear
from jattn.attention import local
from jattn.attention import pallas
from jattn.attention import performer
from tests import helpers

# Run on the floor versions too (.ci/run: pytest -m floor in Colab's pins).
pytestmark = pytest.mark.floor

CORE_ARGS = ("q", "k", "v", "mask", "bias", "scale", "is_causal",
             "local_window", "key_valid_len", "query_valid_len", "precision")
CORES = {
    "dense": dense.attention,
    "blockwise": blockwise.attention,
    "pallas": pallas.attention,
    "local": local.local_attention,
    "linear": linear.linear_attention,
    "performer": performer.performer_attention,
    "dispatch": jattn.dot_product_attention,
}
N, D, H = 12, 8, 2


@pytest.mark.parametrize("name", sorted(CORES))
def test_every_core_takes_the_core_signature(name):
  params = inspect.signature(CORES[name]).parameters
  missing = [a for a in CORE_ARGS if a not in params]
  assert not missing, (name, missing)
  for arg in CORE_ARGS[4:]:
    assert params[arg].kind == inspect.Parameter.KEYWORD_ONLY, (name, arg)


def _x(seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(N, D)),
                     jnp.float32)


def _params(seed=1):
  return jattn.init_self_attention(jax.random.key(seed), D, H)


@pytest.mark.parametrize("core,layer", [
    (functools.partial(jattn.local_attention, window=3),
     functools.partial(jattn.local_self_attention, window=3)),
    (jattn.linear_attention, jattn.linear_self_attention),
])
def test_a_core_plugged_into_self_attention_is_the_named_layer(core, layer):
  params, x = _params(), _x()
  mask = jnp.arange(N) < 9
  got = jattn.self_attention(params, x, mask, attention_fn=core,
                             is_causal=True)
  want = layer(params, x, mask, is_causal=True)
  np.testing.assert_array_equal(got, want)


def test_the_default_core_of_self_attention_is_dot_product_attention():
  params, x = _params(), _x()

  def core(q, k, v, mask=None, **core_args):
    return jattn.dot_product_attention(q, k, v, mask, **core_args)

  np.testing.assert_array_equal(
      jattn.self_attention(params, x, attention_fn=core, local_window=4),
      jattn.self_attention(params, x, local_window=4))


@pytest.mark.parametrize("core,argument,value", [
    (jattn.linear_attention, "bias", jnp.zeros((N, N))),
    (jattn.linear_attention, "local_window", 3),
    (jattn.linear_attention, "scale", 0.5),
    (functools.partial(jattn.performer_attention, key=jax.random.key(0)),
     "local_window", 3),
    (functools.partial(jattn.performer_attention, key=jax.random.key(0)),
     "bias", jnp.zeros((N, N))),
    (pallas.attention, "mask", jnp.ones((N, N), bool)),
])
def test_a_core_refuses_what_it_cannot_express_by_name(core, argument, value):
  with pytest.raises(ValueError, match=f"^{argument}: expected None"):
    jattn.self_attention(_params(), _x(), attention_fn=core,
                         **{argument: value})


def test_attention_fn_with_implementation_or_weights_is_refused():
  for extra in (dict(implementation="dense"), dict(return_weights=True)):
    with pytest.raises(ValueError, match="^attention_fn: expected None"):
      jattn.self_attention(_params(), _x(), attention_fn=jattn.linear_attention,
                           **extra)


@pytest.mark.parametrize("value", ["False", 1, None])
def test_is_causal_must_be_a_static_bool(value):
  q = jnp.ones((4, 2, 8))
  with pytest.raises(TypeError, match="^is_causal: expected a bool"):
    jattn.dot_product_attention(q, q, q, is_causal=value)


def test_a_traced_is_causal_says_it_must_be_static():
  q = jnp.ones((4, 2, 8))
  with pytest.raises(TypeError, match="is_causal: .*trace time"):
    jax.jit(lambda c: jattn.dot_product_attention(q, q, q, is_causal=c))(True)


def test_a_bad_x_is_named_x():
  with pytest.raises(ValueError, match=r"^x: expected shape \(\*, 8\)"):
    jattn.self_attention(_params(), jnp.ones((N, 6)))
  with pytest.raises(ValueError, match=r"^x: expected rank 2"):
    jattn.local_self_attention(_params(), jnp.ones((N,)), window=2)


@pytest.mark.parametrize("kind", models.SUBQUADRATIC_KINDS)
def test_subquadratic_models_refuse_a_sequence_parallel_mesh(kind):
  config = helpers.get_config(kind).model
  params = models.init_model(jax.random.key(0), config, 8, 16)
  mesh = parallel.make_mesh({"data": 1, "seq": 2})
  with _compat.use_mesh(mesh):
    with pytest.raises(ValueError, match="^mesh.seq: expected 1 for model"):
      models.apply_model(params, jnp.zeros((16,), jnp.int32),
                         model_config=config)
