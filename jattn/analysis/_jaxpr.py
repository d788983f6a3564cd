"""Walking jaxprs: sub-jaxprs of call-like equations, duck-typed across jax
versions (jaxpr classes moved between jax.core and jax.extend.core)."""

from __future__ import annotations

import jax


def is_literal(atom) -> bool:
  """A jaxpr input that is a constant (Literal) rather than a variable."""
  return hasattr(atom, "val") and not hasattr(atom, "suffix") and \
      type(atom).__name__ == "Literal"


def open_jaxpr(jaxpr):
  """The `Jaxpr` of a `ClosedJaxpr` (or the argument itself)."""
  return jaxpr.jaxpr if hasattr(jaxpr, "consts") and hasattr(jaxpr, "jaxpr") \
      else jaxpr


# Parameters holding the body of a call-like primitive: "jaxpr" (jit, remat),
# "call_jaxpr" / "fun_jaxpr" (custom_jvp_call, custom_vjp_call).
CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def call_body(eqn, params=CALL_PARAMS):
  """The sub-jaxpr a call-like equation (jit, remat, custom_jvp/vjp) runs on
  its inputs one-to-one, or None for other primitives (scan, while and cond
  are handled by their callers).

  Args:
    eqn: a jaxpr equation.
    params: the names of the parameters that may hold the body, tried in
      order (add "call" for custom_vmap_call).
  """
  if eqn.primitive.name in ("scan", "while", "cond"):
    return None
  for name in params:
    sub = eqn.params.get(name)
    if sub is not None and hasattr(open_jaxpr(sub), "eqns"):
      if len(open_jaxpr(sub).invars) == len(eqn.invars):
        return sub
  return None


def as_function(closed_jaxpr):
  """A Python callable evaluating a ClosedJaxpr."""
  try:
    from jax.extend.core import jaxpr_as_fun  # jax >= 0.4.36
  except ImportError:  # pragma: no cover - older jax
    from jax.core import jaxpr_as_fun
  return jaxpr_as_fun(closed_jaxpr)


def input_structs(closed_jaxpr):
  """ShapeDtypeStructs of a ClosedJaxpr's inputs."""
  return [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
          for v in open_jaxpr(closed_jaxpr).invars]
