"""A user's mistake raises ValueError/TypeError naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jattn

F32 = jnp.float32


def _z(*shape, dtype=F32):
  return jnp.zeros(shape, dtype)


CASES = [
    # (call, error type, words that must appear in the message)
    (lambda: jattn.dot_product_attention(_z(2, 3, 4, 5), _z(2, 3, 4), _z(2, 3, 4)),
     ValueError, ["q", "expected rank 2 or 3", "got rank 4",
                  "one example per call: batch with jax.vmap"]),
    (lambda: jattn.self_attention(jattn.init_self_attention(jax.random.key(0), 8, 2),
                                  _z(2, 5, 8)),
     ValueError, ["x:", "expected rank 2", "batch with jax.vmap"]),
    (lambda: jattn.feed_forward(jattn.init_feed_forward(jax.random.key(0), 8, 16),
                                _z(2, 5, 8)),
     ValueError, ["x_ND", "expected rank 2", "batch with jax.vmap"]),
    (lambda: jattn.dot_product_attention(_z(2, 2, 4), _z(3, 4), _z(3, 4)),
     ValueError, ["k", "expected rank 3", "got rank 2"]),
    (lambda: jattn.dot_product_attention(_z(2, 2, 4), _z(3, 2, 5), _z(3, 2, 4)),
     ValueError, ["k", "K=4", "got 5"]),
    (lambda: jattn.dot_product_attention(_z(2, 2, 4), _z(3, 2, 4), _z(6, 2, 4)),
     ValueError, ["v", "M=3", "got 6"]),
    (lambda: jattn.dot_product_attention(_z(2, 3, 4), _z(3, 2, 4), _z(3, 2, 4)),
     ValueError, ["q", "multiple", "G=2", "H=3"]),
    (lambda: jattn.dot_product_attention(_z(2, 2, 4), _z(3, 2, 4), _z(3, 2, 4),
                                         jnp.ones((2, 3), jnp.int32)),
     TypeError, ["mask", "boolean", "int32"]),
    (lambda: jattn.dot_product_attention(_z(2, 2, 4), _z(3, 2, 4), _z(3, 2, 4),
                                         jnp.ones((2, 4), bool)),
     ValueError, ["mask", "broadcastable to (2, 2, 3)", "(2, 4)"]),
    (lambda: jattn.dot_product_attention(_z(2, 2, 4), _z(3, 2, 4), _z(3, 2, 4),
                                         bias=_z(5, 2, 3)),
     ValueError, ["bias", "broadcastable", "(5, 2, 3)"]),
    (lambda: jattn.dot_product_attention(_z(2, 4, dtype=jnp.int32), _z(3, 4), _z(3, 4)),
     TypeError, ["q", "floating", "int32"]),
    (lambda: jattn.masked_softmax(_z(2, 3), jnp.ones((3, 3), bool)),
     ValueError, ["mask", "broadcastable to (2, 3)", "(3, 3)"]),
    (lambda: jattn.masked_softmax(_z(2, 3), _z(2, 3)),
     TypeError, ["mask", "boolean", "float32"]),
    (lambda: jattn.valid_len_mask(jnp.array([2, -1]), 4),
     ValueError, ["valid_len", "expected values >= 0", "-1"]),
    (lambda: jattn.valid_len_mask(jnp.array([1.5]), 4),
     TypeError, ["valid_len", "integer", "float"]),
    (lambda: jattn.valid_len_mask(jnp.ones((2, 2), jnp.int32), 4),
     ValueError, ["valid_len", "rank 0 or 1", "rank 2"]),
    (lambda: jattn.local_mask(4, 4, 0),
     ValueError, ["window", ">= 1", "got 0"]),
    (lambda: jattn.local_mask(4, 4, (1, -2)),
     ValueError, ["window[1]", ">= 0", "got -2"]),
    (lambda: jattn.causal_mask(4, 2.0),
     TypeError, ["num_keys", "int", "float"]),
    (lambda: jattn.combine_masks(jnp.ones((2, 3), bool), jnp.ones((4,), bool)),
     ValueError, ["masks", "broadcast", "(2, 3)", "(4,)"]),
    (lambda: jattn.self_attention(jattn.init_self_attention(jax.random.key(0), 8, 2),
                                  _z(5, 6)),
     ValueError, ["x:", "(*, 8)", "(5, 6)"]),
    (lambda: jattn.self_attention(
        dict(jattn.init_self_attention(jax.random.key(0), 8, 2), w_o=_z(2, 4, 3, 1)),
        _z(5, 8)),
     ValueError, ["params['w_o']", "rank 3", "rank 4"]),
    (lambda: jattn.self_attention(
        dict(jattn.init_self_attention(jax.random.key(0), 8, 2), w_k=_z(8, 2, 3)),
        _z(5, 8)),
     ValueError, ["params['w_k']", "(8, 2, 4)", "(8, 2, 3)"]),
    (lambda: jattn.self_attention(
        {n: a for n, a in jattn.init_self_attention(jax.random.key(0), 8, 2).items()
         if n != "w_v"}, _z(5, 8)),
     ValueError, ["params", "'w_v'"]),
    (lambda: jattn.init_self_attention(jax.random.key(0), 8, 3),
     ValueError, ["num_heads", "divisor of d_model=8", "got 3"]),
    (lambda: jattn.init_self_attention(jax.random.key(0), 8, 4, num_kv_heads=3),
     ValueError, ["num_kv_heads", "divisor of num_heads=4", "got 3"]),
    (lambda: jattn.self_attention(jattn.init_self_attention(jax.random.key(0), 8, 2),
                                  _z(5, 8), positions=jnp.arange(4)),
     ValueError, ["positions", "(5,)", "(4,)"]),
    (lambda: jattn.additive_attention(
        jattn.init_additive_attention(jax.random.key(0), 4, 3, 5),
        _z(2, 4), _z(6, 2), _z(6, 3)),
     ValueError, ["params['w_k']", "(2, 5)", "(3, 5)"]),
    (lambda: jattn.apply_rope(_z(4, 2, 5), jnp.arange(4)),
     ValueError, ["x_LHK", "even", "K=5"]),
    (lambda: jattn.sinusoidal_encoding(4, 0),
     ValueError, ["d_model", ">= 1", "got 0"]),
    (lambda: jattn.learned_encoding(jattn.init_learned_encoding(
        jax.random.key(0), 4, 2), jnp.array([4])),
     ValueError, ["positions", "[0, 4)", "4"]),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_error_names_argument_and_expectation(index):
  call, error, words = CASES[index]
  with pytest.raises(error) as info:
    call()
  message = str(info.value)
  for word in words:
    assert word in message, (word, message)


def test_errors_raise_at_trace_time_under_jit():
  params = jattn.init_self_attention(jax.random.key(0), 8, 2)
  f = jax.jit(jattn.self_attention)
  with pytest.raises(TypeError, match="mask"):
    f(params, _z(3, 8), jnp.ones((3, 3), np.float32))
