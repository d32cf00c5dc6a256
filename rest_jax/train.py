"""The jitted train and evaluation steps, for any registered loss.

`make_train_step` builds `(state, batch, rng) -> (state, metrics)`: one teacher-forced forward
pass of the policy (plus the value head and the frozen copies the loss declares in
`LossSpec.requires`), the loss, gradients with respect to the policy parameters and the loss's
dual variables, and an optax update. The state is donated, and its shardings are fixed by the
`StateFactory`, so the step updates the policy in place on its devices.

Batches are dicts of arrays with a leading batch dimension:
  inputs [B,S] int32 and targets [B,T] int32 (PAD=0 right padding, EOS-terminated; required);
  rewards [B] float32, weights [B] float32, behaviour_logprobs [B,T] float32 (optional).
Padding positions never enter a loss: the mask is `targets != PAD`.

Dropout and frozen copies. With dropout on, the policy pass is a random thinned network. Frozen
logits that enter a KL term (`bc_logits`, `prev_logits`) are computed with the *same* dropout
key, so both sides of the KL are the same thinned network and the KL between identical
parameters is exactly 0: comparing a dropout pass with a deterministic one would report a KL
from the noise alone (and drive BVMPO's trust-region multiplier up for nothing). Frozen
log-probs used as rewards or weights (`bc_token_logprobs`, GOLD's `lagged_token_logprobs`) are
computed deterministically, as the loss definitions assume.

Frozen copies refreshed from the policy during a phase: GOLD's lagged policy every
`lagged_sync_every` steps and BVMPO's trust-region reference (`prev_params`, V-MPO's target
network) every `trust_region_sync_every` steps; 0 never refreshes (the copy stays at the round's
starting policy).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rest_jax import sharding as sharding_lib
from rest_jax.losses import base as loss_base
from rest_jax.models.transformer import PAD_ID, Transformer, token_log_probs
from rest_jax.train_state import PolicyState

Batch = dict[str, jax.Array]

BATCH_KEYS = ("inputs", "targets", "rewards", "weights", "behaviour_logprobs", "group_ids",
              "old_values")


def check_batch(batch: dict[str, Any]) -> None:
  """Rejects batches with unknown keys or missing tokens before anything is compiled."""
  unknown = set(batch) - set(BATCH_KEYS)
  if unknown:
    raise ValueError(f"Unknown batch key(s) {sorted(unknown)}; allowed: {BATCH_KEYS}.")
  for key in ("inputs", "targets"):
    if key not in batch:
      raise ValueError(f"Batch is missing {key!r}; required keys: ('inputs', 'targets').")


def _frozen_logits(model, params, batch, deterministic=True, rng=None):
  rngs = None if deterministic else {"dropout": rng}
  return jax.lax.stop_gradient(model.apply({"params": params}, batch["inputs"],
                                           batch["targets"], deterministic=deterministic,
                                           rngs=rngs))


def build_loss_inputs(model: Transformer, spec: loss_base.LossSpec, params: Any,
                      state: PolicyState, batch: Batch, rng: jax.Array, deterministic: bool
                      ) -> loss_base.LossInputs:
  """Runs the policy (and the frozen copies the loss needs) on a batch."""
  targets = batch["targets"]
  needs = spec.requires
  outputs = model.apply({"params": params}, batch["inputs"], targets, deterministic=deterministic,
                        return_values="values" in needs, rngs={"dropout": rng})
  logits, values = outputs if "values" in needs else (outputs, None)
  b = targets.shape[0]
  extras: dict[str, Any] = {}
  # KL references share the policy pass's dropout key (see the module docstring).
  kl_reference = lambda frozen: _frozen_logits(model, frozen, batch, deterministic, rng)
  if needs & {"bc_logits", "bc_token_logprobs"}:
    _require_frozen(state.bc_params, "bc_params", spec.name)
  if "bc_logits" in needs:
    extras["bc_logits"] = kl_reference(state.bc_params)
  if "bc_token_logprobs" in needs:
    extras["bc_token_logprobs"] = token_log_probs(
        _frozen_logits(model, state.bc_params, batch), targets)
  if "lagged_token_logprobs" in needs:
    _require_frozen(state.lagged_params, "lagged_params", spec.name)
    extras["lagged_token_logprobs"] = token_log_probs(
        _frozen_logits(model, state.lagged_params, batch), targets)
  if "prev_logits" in needs:
    _require_frozen(state.prev_params, "prev_params", spec.name)
    extras["prev_logits"] = kl_reference(state.prev_params)
  if "behaviour_token_logprobs" in needs:
    if "behaviour_logprobs" not in batch:
      raise ValueError(f"Loss {spec.name!r} needs the batch key 'behaviour_logprobs'.")
    extras["behaviour_token_logprobs"] = batch["behaviour_logprobs"]
  for key in ("group_ids", "old_values"):  # Made by the on-policy step (rest_jax.online).
    if key in needs:
      if key not in batch:
        raise ValueError(f"Loss {spec.name!r} needs the batch key {key!r} (an on-policy loss: "
                         "train it with rest_jax.online).")
      extras[key] = batch[key]
  return loss_base.LossInputs(
      token_logprobs=token_log_probs(logits, targets), logits=logits,
      mask=(targets != PAD_ID).astype(jnp.float32),
      rewards=batch.get("rewards", jnp.zeros((b,), jnp.float32)).astype(jnp.float32),
      weights=batch.get("weights", jnp.ones((b,), jnp.float32)).astype(jnp.float32),
      step=state.round_step, values=values, **extras)


def _require_frozen(value, field, loss_name):
  if value is None:
    raise ValueError(f"Loss {loss_name!r} needs PolicyState.{field}; set it with "
                     f"StateFactory.reset_optimizer(..., frozen={{'{field}': params}}).")


def make_train_step(model: Transformer, spec: loss_base.LossSpec, loss_config: Any,
                    tx: optax.GradientTransformation, state_shardings: PolicyState, mesh: Mesh,
                    *, lagged_sync_every: int = 0, trust_region_sync_every: int = 0,
                    dropout: bool = True
                    ) -> Callable[[PolicyState, Batch, jax.Array], tuple[PolicyState, dict]]:
  """A jitted, state-donating train step for loss `spec`.

  `lagged_sync_every` > 0 refreshes `state.lagged_params` from the policy every that many round
  steps (GOLD's lagged importance-weight policy); `trust_region_sync_every` > 0 does the same
  for `state.prev_params` (V-MPO's trust-region target). Both sync before the step's update.
  """
  if spec.needs_value_head and not model.config.value_head:
    raise ValueError(f"Loss {spec.name!r} needs a value head: set ModelConfig.value_head=True.")
  for field, value in (("lagged_sync_every", lagged_sync_every),
                       ("trust_region_sync_every", trust_region_sync_every)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"make_train_step: {field}={value!r} is invalid: expected an integer "
                       ">= 0 (0 = never refresh).")

  def step(state: PolicyState, batch: Batch, rng: jax.Array):
    state = _refresh(state, "lagged_params", lagged_sync_every)
    state = _refresh(state, "prev_params", trust_region_sync_every)

    def loss_fn(trainable):
      inputs = build_loss_inputs(model, spec, trainable["params"], state, batch, rng,
                                 deterministic=not dropout)
      return spec.fn(inputs, trainable["loss_params"], loss_config)

    trainable = state.trainable()
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, round_step=state.round_step + 1,
                              params=trainable["params"], loss_params=trainable["loss_params"],
                              opt_state=opt_state)
    return new_state, metrics

  repl = sharding_lib.replicated(mesh)
  return jax.jit(step, in_shardings=(state_shardings, None, repl),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))


def _refresh(state: PolicyState, field: str, every: int) -> PolicyState:
  """`state` with frozen copy `field` set to the policy params when round_step % every == 0."""
  frozen = getattr(state, field)
  if not every or frozen is None:
    return state
  sync = state.round_step % every == 0
  return state.replace(**{field: jax.tree_util.tree_map(
      lambda old, current: jnp.where(sync, current, old), frozen, state.params)})


def make_eval_step(model: Transformer, mesh: Mesh, param_shardings: Any
                   ) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Jitted `(params, batch) -> {nll_sum, num_tokens, num_correct}` for validation loss."""

  def evaluate(params, batch):
    targets = batch["targets"]
    logits = model.apply({"params": params}, batch["inputs"], targets)
    mask = (targets != PAD_ID).astype(jnp.float32)
    weights = batch.get("weights", jnp.ones(targets.shape[:1], jnp.float32))[:, None] * mask
    nll = -token_log_probs(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return {"nll_sum": (nll * weights).sum(), "num_tokens": weights.sum(),
            "num_correct": (correct * weights).sum()}

  repl = sharding_lib.replicated(mesh)
  return jax.jit(evaluate, in_shardings=(param_shardings, None), out_shardings=repl)
