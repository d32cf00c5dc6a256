"""GOLD (Pang & He 2021): off-policy policy gradient from demonstrations, per token.

The grown data is treated as demonstrations; each target token's NLL is scaled by

  w_t = clip(pi~(y_t | s_t), u, 1)     importance weight from a lagged policy copy pi~ (synced
                                        every K steps by the trainer); u = 0.2 by default;
  Q_t = sum_{j=0..k} gamma^j r_{t+j}    a truncated return of per-token rewards from a frozen
                                        MLE/BC model p_MLE; k = 5, gamma = 1 by default;

  gold_s: r_t = max(c, p_MLE(y_t | s_t))            c = 0.1
  gold_p: r_t = max(c, log p_MLE(y_t | s_t) - b)    c = 0.1, b = -60 (the GOLD reference
                                                     setting for IWSLT14 De-En)

  loss = normalised sum_t w_t * Q_t * (-log pi_theta(y_t | s_t)),  w and Q stop-gradient.

Positions past a sequence's end. REST_PAPER.md says they "count as 1". We read this as "the
continuation after EOS is certain": a past-the-end position has p_MLE = 1 and pays the reward of
a certain token, max(c, 1) = 1 for gold_s (the literal 1) and max(c, 0 - b) = -b for gold_p (60
by default). This is what the GOLD reference code does (it fills shifted-out positions with
probability 1 before the reward transform) and it keeps every Q_t a sum of exactly k + 1
comparable terms. `beyond_end_reward` overrides it with a fixed number (e.g. 1.0 for the
literal reading under gold_p). Padding after EOS counts as past the end.

Note the scale: with gold_p's default b every r_t is ~60, so Q_t is ~360 and the loss is ~360x
the NLL; Adam is invariant to that, gradient clipping thresholds are not.

Normalisation: sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1), as everywhere (see
`sequence_math`); here w_b is the example weight, not GOLD's importance weight.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math


@dataclasses.dataclass(frozen=True)
class GoldSConfig:
  """GOLD-s hyper-parameters.

  horizon: k, number of future tokens in the truncated return (>= 0).
  gamma: discount of the truncated return, in [0, 1].
  min_importance_weight: u, lower clip of the lagged-policy probability, in [0, 1].
  min_reward: c, lower bound of the per-token reward, >= 0.
  beyond_end_reward: reward of positions past the end; None = reward of a certain token.
  """

  horizon: int = 5
  gamma: float = 1.0
  min_importance_weight: float = 0.2
  min_reward: float = 0.1
  beyond_end_reward: float | None = None

  def __post_init__(self):
    base.require_int_in_range(self, "horizon", 0, 1024)
    base.require_in_range(self, "gamma", 0.0, 1.0)
    base.require_in_range(self, "min_importance_weight", 0.0, 1.0)
    base.require_in_range(self, "min_reward", 0.0)
    if self.beyond_end_reward is not None:
      base.require_in_range(self, "beyond_end_reward", 0.0)


@dataclasses.dataclass(frozen=True)
class GoldPConfig(GoldSConfig):
  """GOLD-p hyper-parameters: GOLD-s's plus b, the log-probability baseline (<= 0)."""

  logprob_baseline: float = -60.0

  def __post_init__(self):
    super().__post_init__()
    base.require_in_range(self, "logprob_baseline", high=0.0)


REQUIRES = frozenset({"lagged_token_logprobs", "bc_token_logprobs"})


def per_token_rewards(
    bc_token_logprobs_BxT: jax.Array, config: GoldSConfig, variant: str
) -> jax.Array:
  """r_t of GOLD-s (probability) or GOLD-p (shifted log-probability), floored at c."""
  if variant == "s":
    raw_BxT = jnp.exp(bc_token_logprobs_BxT)
  else:
    raw_BxT = bc_token_logprobs_BxT - config.logprob_baseline
  return jnp.maximum(config.min_reward, raw_BxT)


def beyond_end_reward(config: GoldSConfig, variant: str) -> float:
  """Reward of a past-the-end position: the configured value or that of a certain token."""
  if config.beyond_end_reward is not None:
    return float(config.beyond_end_reward)
  certain_token_reward = 1.0 if variant == "s" else 0.0 - config.logprob_baseline
  return max(config.min_reward, certain_token_reward)


def gold_loss(
    inputs: base.LossInputs, loss_params: dict, config: GoldSConfig, *, variant: str
) -> tuple[jax.Array, base.Metrics]:
  """GOLD-s (variant 's') or GOLD-p (variant 'p') token loss."""
  del loss_params
  name = f"gold_{variant}"
  base.check_inputs(inputs, name, REQUIRES)
  if variant == "p" and not isinstance(config, GoldPConfig):
    raise TypeError(f"Loss 'gold_p' needs a GoldPConfig, got {type(config).__name__}")
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  lagged_BxT = jax.lax.stop_gradient(inputs.lagged_token_logprobs.astype(jnp.float32))
  bc_BxT = jax.lax.stop_gradient(inputs.bc_token_logprobs.astype(jnp.float32))

  importance_BxT = jnp.clip(jnp.exp(lagged_BxT), config.min_importance_weight, 1.0)
  rewards_BxT = per_token_rewards(bc_BxT, config, variant)
  returns_BxT = sequence_math.truncated_returns(
      rewards_BxT, inputs.mask, config.horizon, config.gamma,
      beyond_end_reward(config, variant))
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  loss = sequence_math.weighted_token_mean(
      importance_BxT * returns_BxT * nll_BxT, token_weights_BxT)
  metrics = {
      "loss": loss,
      "nll": sequence_math.weighted_token_mean(nll_BxT, token_weights_BxT),
      "mean_importance_weight": sequence_math.weighted_token_mean(
          importance_BxT, token_weights_BxT),
      "mean_return": sequence_math.weighted_token_mean(returns_BxT, token_weights_BxT),
      "mean_weight": sequence_math.weighted_token_mean(
          importance_BxT * returns_BxT, token_weights_BxT),
      "num_tokens": sequence_math.num_weighted_tokens(token_weights_BxT),
  }
  return loss, metrics


GOLD_S_SPEC = base.LossSpec(
    name="gold_s", fn=functools.partial(gold_loss, variant="s"),
    config_cls=GoldSConfig, requires=REQUIRES)
GOLD_P_SPEC = base.LossSpec(
    name="gold_p", fn=functools.partial(gold_loss, variant="p"),
    config_cls=GoldPConfig, requires=REQUIRES)
