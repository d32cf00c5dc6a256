"""The one policy state pytree, created sharded from abstract shapes.

`PolicyState` holds everything that changes or must be restored: step counters, the policy
parameters (with the optional value head), the loss's dual variables, the optimizer state and
the frozen copies some losses need (the BC prior, a lagged policy, the round's starting policy).
The sampler reads `state.params` and the train step updates the whole state, both under the
same `NamedSharding`s computed here, so nothing is copied or re-sharded between Grow and Improve.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rest_jax import optim
from rest_jax import sharding as sharding_lib
from rest_jax.models.transformer import Transformer

FROZEN_FIELDS = ("bc_params", "lagged_params", "prev_params")


@flax.struct.dataclass
class PolicyState:
  step: jax.Array  # Optimizer steps taken over the whole run.
  round_step: jax.Array  # Optimizer steps since the current optimizer was (re)initialised.
  params: Any
  loss_params: Any
  opt_state: Any
  bc_params: Any = None  # Frozen behaviour-cloning prior (GOLD rewards, BVMPO's KL to BC).
  lagged_params: Any = None  # Lagged policy copy (GOLD importance weights).
  prev_params: Any = None  # The round's starting policy (V-MPO trust region).

  def trainable(self) -> dict[str, Any]:
    return {"params": self.params, "loss_params": self.loss_params}


def _optimizer_state_shardings(opt_state: Any, trainable_shardings: Any, replicated: Any):
  """Each optimizer-state leaf gets the sharding of the trainable leaf it mirrors, else
  `replicated`.

  A leaf mirrors trainable leaf `['params'][...]['kernel']` when its key path ends with that
  path (Adam's `mu[...]`, `nu[...]`, under any nesting of chains and partitions). Matching by
  path works for `optim.with_dual_optimizer`'s partitioned state, where
  `optax.tree_utils.tree_map_params` cannot trace the label function.
  """
  by_path = {tuple(str(k) for k in path): sharding for path, sharding
             in jax.tree_util.tree_flatten_with_path(trainable_shardings)[0]}

  def pick(path, _):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      if keys[start:] in by_path:
        return by_path[keys[start:]]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, opt_state)


def _dummy_batch(max_source_len: int, max_target_len: int):
  return (jnp.ones((1, max_source_len), jnp.int32), jnp.ones((1, max_target_len), jnp.int32))


def abstract_boxed_params(model: Transformer, max_source_len: int = 8, max_target_len: int = 8):
  """Abstract (shape-only) params, still boxed with their logical axis names."""
  src, tgt = _dummy_batch(max_source_len, max_target_len)
  return jax.eval_shape(
      lambda rng: model.init(rng, src, tgt, return_values=model.config.value_head)["params"],
      jax.random.PRNGKey(0))


class StateFactory:
  """Creates and transforms `PolicyState`s with fixed shardings on one mesh.

  Holds the model, the mesh and the rules; the optimizer may change per Improve round
  (`reset_optimizer`) and the state shardings are recomputed for it.
  """

  def __init__(self, model: Transformer, mesh: Mesh, rules=sharding_lib.DEFAULT_RULES):
    self.model = model
    self.mesh = mesh
    self.rules = rules
    self.param_shardings = sharding_lib.param_shardings(abstract_boxed_params(model), mesh, rules)
    self.replicated = sharding_lib.replicated(mesh)

  # ------------------------------------------------------------------------ shardings
  def state_shardings(self, abstract_state: PolicyState, tx: optax.GradientTransformation):
    del tx  # The optimizer state's layout is read from abstract_state.opt_state.
    repl = self.replicated
    loss_param_shardings = jax.tree_util.tree_map(lambda _: repl, abstract_state.loss_params)
    trainable_shardings = {"params": self.param_shardings, "loss_params": loss_param_shardings}
    opt_shardings = _optimizer_state_shardings(abstract_state.opt_state, trainable_shardings,
                                               repl)
    frozen = {f: (None if getattr(abstract_state, f) is None else self.param_shardings)
              for f in FROZEN_FIELDS}
    return PolicyState(step=repl, round_step=repl, params=self.param_shardings,
                       loss_params=loss_param_shardings, opt_state=opt_shardings, **frozen)

  def abstract_state(self, tx: optax.GradientTransformation, loss_params: Any = None,
                     frozen: tuple[str, ...] = ()) -> tuple[PolicyState, PolicyState]:
    """(abstract state with shardings attached, shardings) — for restoring checkpoints."""
    abstract = jax.eval_shape(lambda rng: self._init(rng, tx, loss_params, frozen),
                              jax.random.PRNGKey(0))
    shardings = self.state_shardings(abstract, tx)
    with_shardings = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return with_shardings, shardings

  # ------------------------------------------------------------------------- creation
  def _init(self, rng, tx, loss_params, frozen):
    src, tgt = _dummy_batch(8, 8)
    params = nn.meta.unbox(self.model.init(rng, src, tgt,
                                           return_values=self.model.config.value_head)["params"])
    loss_params = {} if loss_params is None else loss_params
    opt_state = tx.init({"params": params, "loss_params": loss_params})
    copies = {f: jax.tree_util.tree_map(jnp.copy, params) if f in frozen else None
              for f in FROZEN_FIELDS}
    return PolicyState(step=jnp.zeros((), jnp.int32), round_step=jnp.zeros((), jnp.int32),
                       params=params, loss_params=loss_params, opt_state=opt_state, **copies)

  def create(self, rng: jax.Array, tx: optax.GradientTransformation, loss_params: Any = None
             ) -> tuple[PolicyState, PolicyState]:
    """A freshly initialised, sharded state (params are created on their devices)."""
    _, shardings = self.abstract_state(tx, loss_params)
    init = jax.jit(lambda r: self._init(r, tx, loss_params, ()), out_shardings=shardings)
    return init(rng), shardings

  def reset_optimizer(self, state: PolicyState, tx: optax.GradientTransformation,
                      loss_params: Any = None, frozen: dict[str, Any] | None = None
                      ) -> tuple[PolicyState, PolicyState]:
    """Starts a new phase from `state`'s params and step, keeping its frozen copies unless
    `frozen` replaces them (see `start_phase`)."""
    kept = {f: getattr(state, f) for f in FROZEN_FIELDS}
    kept.update(frozen or {})
    return self.start_phase(state.params, state.step, tx, loss_params, kept)

  def start_phase(self, params: Any, step: jax.Array, tx: optax.GradientTransformation,
                  loss_params: Any = None, frozen: dict[str, Any] | None = None,
                  lr_scale: float = 1.0) -> tuple[PolicyState, PolicyState]:
    """A state for a new training phase: these params, a fresh optimizer and dual variables.

    `frozen` maps frozen field names to the params to store there; they are copied so the state
    never holds one buffer twice and can be donated to the train step. `lr_scale` multiplies
    the optimizer's learning rate (see `optim.set_lr_scale`).
    """
    frozen = dict(frozen or {})
    unknown = set(frozen) - set(FROZEN_FIELDS)
    if unknown:
      raise ValueError(f"Unknown frozen field(s) {sorted(unknown)}; allowed: {FROZEN_FIELDS}.")
    loss_params = {} if loss_params is None else loss_params
    values = {f: frozen.get(f) for f in FROZEN_FIELDS}

    def build(params, step, loss_params, values):
      copies = {f: (None if v is None else jax.tree_util.tree_map(jnp.copy, v))
                for f, v in values.items()}
      opt_state = tx.init({"params": params, "loss_params": loss_params})
      if lr_scale != 1.0:
        opt_state = optim.set_lr_scale(opt_state, lr_scale)
      return PolicyState(step=jnp.asarray(step, jnp.int32), round_step=jnp.zeros((), jnp.int32),
                         params=jax.tree_util.tree_map(jnp.copy, params),
                         loss_params=loss_params, opt_state=opt_state, **copies)

    abstract = jax.eval_shape(build, params, step, loss_params, values)
    shardings = self.state_shardings(abstract, tx)
    new_state = jax.jit(build, out_shardings=shardings)(params, step, loss_params, values)
    return new_state, shardings
