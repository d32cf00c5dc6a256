"""Optimizer: AdamW with linear warm-up, a configurable decay and global-norm clipping.

Weight decay applies to matrices only (not to LayerNorm scales, biases or loss dual variables).
The update is finally multiplied by a learning-rate scale that lives in the optimizer *state*
(`set_lr_scale`), so Improve rounds that only lower the learning rate reuse one compiled step.

Loss dual variables (V-MPO's temperature eta and KL multiplier alpha) get their own Adam
(`with_dual_optimizer`, constant rate `OptimizerConfig.dual_learning_rate`): they are Lagrange
multipliers, not weights, and under the policy's AdamW (small learning rate, warm-up, per-round
decay, clipping by the policy's gradient norm) they barely moved — ~0.3 in raw units over 1000
steps — so the "learned" duals were in effect constants. Acme's MPO agent likewise gives
its duals a separate optimizer with a larger step. Phases without dual variables
(BC, value pretraining, GOLD, ...) keep the plain policy optimizer, so their state layout (and
their checkpoints) do not change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rest_jax.configs import OptimizerConfig


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  peak = config.learning_rate
  warmup = max(config.warmup_steps, 0)
  end = peak * config.end_learning_rate_fraction

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1.0) / max(warmup, 1))
    after = jnp.maximum(step - warmup, 0.0)
    span = max(config.total_steps - warmup, 1)
    frac = jnp.minimum(after / span, 1.0)
    if config.decay == "constant":
      decayed = peak
    elif config.decay == "linear":
      decayed = peak + (end - peak) * frac
    elif config.decay == "cosine":
      decayed = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    else:  # rsqrt: constant during warm-up, then peak * sqrt(warmup / step).
      decayed = peak * jnp.sqrt(max(warmup, 1) / jnp.maximum(step + 1.0, max(warmup, 1)))
    return jnp.where(step < warmup, peak * warm, decayed)

  return schedule


def _decay_mask(trainable):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and "loss_params" not in jax.tree_util.keystr(path), trainable)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  parts = []
  if config.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(optax.adamw(learning_rate_schedule(config), b1=config.b1, b2=config.b2,
                           eps=config.eps, weight_decay=config.weight_decay, mask=_decay_mask))
  parts.append(optax.inject_hyperparams(optax.scale)(step_size=1.0))
  return optax.chain(*parts)


POLICY_LABEL, DUAL_LABEL = "policy", "duals"


def _labels(trainable):
  """`trainable` = {"params": ..., "loss_params": ...} -> the same tree of optimizer labels."""
  return {"params": jax.tree_util.tree_map(lambda _: POLICY_LABEL, trainable["params"]),
          "loss_params": jax.tree_util.tree_map(lambda _: DUAL_LABEL,
                                                trainable["loss_params"])}


def with_dual_optimizer(policy_tx: optax.GradientTransformation, config: OptimizerConfig
                        ) -> optax.GradientTransformation:
  """`policy_tx` for the policy parameters, a separate constant-rate Adam for the loss duals.

  The policy part keeps its warm-up, decay, clipping (over the policy gradients only) and
  per-round learning-rate scale; the duals see none of them.
  """
  return optax.multi_transform(
      {POLICY_LABEL: policy_tx, DUAL_LABEL: optax.adam(config.dual_learning_rate)}, _labels)


def set_lr_scale(opt_state, scale):
  """The optimizer state of `make_optimizer` (optionally `with_dual_optimizer`) with the policy's
  learning-rate scale set to `scale`; the duals' rate is not scaled."""
  if hasattr(opt_state, "inner_states"):  # with_dual_optimizer's partition state.
    inner = dict(opt_state.inner_states)
    masked = inner[POLICY_LABEL]
    inner[POLICY_LABEL] = masked._replace(inner_state=set_lr_scale(masked.inner_state, scale))
    return opt_state._replace(inner_states=inner)
  scaler = opt_state[-1]
  hyperparams = dict(scaler.hyperparams, step_size=jnp.asarray(scale, jnp.float32))
  return tuple(opt_state[:-1]) + (scaler._replace(hyperparams=hyperparams),)
