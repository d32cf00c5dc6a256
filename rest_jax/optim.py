"""Optimizer: AdamW with linear warm-up, a configurable decay and global-norm clipping.

Weight decay applies to matrices only (not to LayerNorm scales, biases or loss dual variables).
The update is finally multiplied by a learning-rate scale that lives in the optimizer *state*
(`set_lr_scale`), so Improve rounds that only lower the learning rate reuse one compiled step.
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


def set_lr_scale(opt_state, scale) -> tuple:
  """The optimizer state of `make_optimizer` with its learning-rate scale set to `scale`."""
  scaler = opt_state[-1]
  hyperparams = dict(scaler.hyperparams, step_size=jnp.asarray(scale, jnp.float32))
  return tuple(opt_state[:-1]) + (scaler._replace(hyperparams=hyperparams),)
