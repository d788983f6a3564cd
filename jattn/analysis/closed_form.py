"""Closed-form FLOP counts of jattn's sequence layers, per example.

Counts follow XLA's convention, so they can be held against `xla_flops`: a
multiply-add of a matrix product is 2 FLOPs, every elementwise add, multiply,
compare, select or reduction step is 1 FLOP per element, and transcendental
functions (exp, tanh) are counted apart, not here. The logistic sigmoid is
1 / (1 + exp(-x)): 3 FLOPs and one transcendental.

Matrix products give the leading terms of the seed's table; the elementwise
terms are counted from the operations each layer's code performs.
"""

from __future__ import annotations

from jattn.conv import conv_padding

# Elementwise FLOPs per attention logit: scale, row max, subtract, row sum,
# divide (the exp is a transcendental).
SOFTMAX_FLOPS_PER_LOGIT = 5

# Elementwise FLOPs per hidden unit and step of each recurrent cell, counted
# from jattn.rnn: gate pre-activation adds, sigmoids (3 each), products and
# sums of the state update, and the two `where`s that keep padded steps from
# changing the state and output (the LSTM keeps two states).
RNN_ELEMENTWISE_PER_UNIT = {
    "elman": 1 + 1 + 2,                   # bias add, add, 2 where
    "gru": 3 + 2 + 2 * 3 + 1 + 1 + 4 + 2,  # 3 bias, 2 gate adds, 2 sigmoids,
                                          # r*h, add, z*h + (1-z)*n, 2 where
    "lstm": 4 + 4 + 3 * 3 + 4 + 3,        # 4 bias, 4 gate adds, 3 sigmoids,
                                          # c and h updates, 3 where
}
RNN_GATES = {"elman": 1, "gru": 3, "lstm": 4}


def attention_flops(n: int, d: int, num_heads: int, *,
                    head_dim: int | None = None,
                    num_kv_heads: int | None = None) -> int:
  """Self-attention (n, d) -> (n, d), no bias, no mask.

  Projections 2 n d (H + 2G) K and 2 n H K d, logits and weighted values
  2 H n^2 K each, softmax 5 H n^2: O(n d^2 + n^2 d).
  """
  H = num_heads
  G = H if num_kv_heads is None else num_kv_heads
  K = d // H if head_dim is None else head_dim
  projections = 2 * n * d * (H + 2 * G) * K + 2 * n * H * K * d
  return projections + dot_product_attention_flops(n, n, H, K)


def dot_product_attention_flops(num_queries: int, num_keys: int,
                                num_heads: int, head_dim: int) -> int:
  """The attention core softmax(q k^T / sqrt(K)) v, without projections.

  2 H L M K for the logits, as much for the weighted values, and the softmax:
  O(n^2 d) for self-attention (L = M = n, H K = d), the seed's count.
  """
  logits = num_heads * num_queries * num_keys
  return 2 * logits * head_dim * 2 + SOFTMAX_FLOPS_PER_LOGIT * logits


def conv_flops(n: int, d: int, kernel_size: int, *, causal: bool = False,
               dilation: int = 1, use_bias: bool = True) -> int:
  """'Same' convolution (n, d) -> (n, d): O(k n d^2).

  Each of the n outputs multiplies the taps that fall inside the sequence
  (zero padding is not computed) by a d x d matrix: 2 d^2 per tap, plus the
  bias add.
  """
  left, _ = conv_padding(kernel_size, causal=causal, dilation=dilation)
  offsets = [t * dilation - left for t in range(kernel_size)]
  taps = sum(max(0, n - abs(o)) for o in offsets)
  return 2 * d * d * taps + (n * d if use_bias else 0)


def rnn_flops(n: int, d: int, cell: str = "gru") -> int:
  """Unidirectional recurrence (n, d) -> (n, d), hidden width d: O(n d^2).

  Per step: input projection 2 d S d, recurrent product 2 d S d (S gates),
  and the cell's elementwise work.
  """
  S = RNN_GATES[cell]
  per_step = 2 * d * S * d * 2 + RNN_ELEMENTWISE_PER_UNIT[cell] * d
  return n * per_step
