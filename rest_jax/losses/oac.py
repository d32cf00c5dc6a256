"""Offline actor-critic (OAC) and behaviour value estimation (`value_pretrain`).

Rewards are sparse (paid once, at EOS) and transitions deterministic, so the Monte-Carlo return
of a grown sequence is G_t = gamma^(T_end - t) r, i.e. the sequence reward r at every position
when gamma = 1 (see `sequence_math.sparse_reward_returns`). Regressing V(s_t) to G_t estimates
the value of the behaviour policy that produced the data ("behaviour value estimation").

  value_pretrain: value_coef * mean 0.5 * (G_t - V(s_t))^2 only. Run before BVMPO/OAC so their
                  advantages start from a sensible critic; the policy gets no gradient.
  oac:            the same critic term plus the policy-gradient term
                  mean_t -sg(G_t - V(s_t)) * log pi_theta(y_t | s_t), optionally with the
                  advantages standardised (mean/std over valid tokens) first, negative
                  advantages bounded as below.

The paper gives no exact OAC equation; this is the plain one-step advantage actor-critic on
fixed data, with the critic kept in the same objective so it tracks the data it is fitted on.
Tokens with a negative advantage would make the policy term unbounded below (driving them to
probability 0 always pays); `negative_weights` bounds it (`sequence_math.signed_weighted_nll`):
by default ("cap_nll") their NLL counts only up to `negative_nll_cap`.
"mean" is the package-wide normalisation sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1)
(see `sequence_math`).
"""
import dataclasses

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math

REQUIRES = frozenset({"values"})


@dataclasses.dataclass(frozen=True)
class ValuePretrainConfig:
  """gamma in (0, 1]: discount of the sparse return; value_coef >= 0 scales the critic loss."""

  gamma: float = 1.0
  value_coef: float = 1.0

  def __post_init__(self):
    base.require_in_range(self, "gamma", 0.0, 1.0, low_inclusive=False)
    base.require_in_range(self, "value_coef", 0.0)


@dataclasses.dataclass(frozen=True)
class OACConfig(ValuePretrainConfig):
  """Adds to the critic's settings:

  normalize_advantages: standardise advantages over the batch's valid tokens.
  negative_weights: how negative-advantage tokens count ('cap_nll', 'zero' or 'unbounded').
  negative_nll_cap: > 0, the NLL at which 'cap_nll' stops pushing such a token down.
  """

  normalize_advantages: bool = False
  negative_weights: str = "cap_nll"
  negative_nll_cap: float = 5.0

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.normalize_advantages, bool):
      raise TypeError(f"OACConfig.normalize_advantages must be a bool, "
                      f"got {self.normalize_advantages!r}")
    base.require_choice(self, "negative_weights", sequence_math.NEGATIVE_WEIGHT_MODES)
    base.require_in_range(self, "negative_nll_cap", 0.0, low_inclusive=False)


def _critic_terms(inputs: base.LossInputs, gamma: float):
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  returns_BxT = sequence_math.sparse_reward_returns(inputs.rewards, inputs.mask, gamma)
  values_BxT = inputs.values.astype(jnp.float32)
  value_loss = sequence_math.value_regression_loss(values_BxT, returns_BxT, token_weights_BxT)
  metrics = {
      "value_loss": value_loss,
      "mean_return": sequence_math.weighted_token_mean(returns_BxT, token_weights_BxT),
      "mean_value": sequence_math.weighted_token_mean(values_BxT, token_weights_BxT),
      "num_tokens": sequence_math.num_weighted_tokens(token_weights_BxT),
  }
  return token_weights_BxT, returns_BxT, values_BxT, value_loss, metrics


def value_pretrain_loss(
    inputs: base.LossInputs, loss_params: dict, config: ValuePretrainConfig
) -> tuple[jax.Array, base.Metrics]:
  """Critic regression to the Monte-Carlo return; no policy term."""
  del loss_params
  base.check_inputs(inputs, "value_pretrain", REQUIRES)
  _, _, _, value_loss, metrics = _critic_terms(inputs, config.gamma)
  loss = config.value_coef * value_loss
  return loss, {"loss": loss, **metrics}


def oac_loss(
    inputs: base.LossInputs, loss_params: dict, config: OACConfig
) -> tuple[jax.Array, base.Metrics]:
  """Advantage-weighted NLL with a stop-gradient critic baseline, plus the critic loss."""
  del loss_params
  base.check_inputs(inputs, "oac", REQUIRES)
  token_weights_BxT, returns_BxT, values_BxT, value_loss, metrics = _critic_terms(
      inputs, config.gamma)
  advantages_BxT = jax.lax.stop_gradient(returns_BxT - values_BxT)
  raw_mean_advantage = sequence_math.weighted_token_mean(advantages_BxT, token_weights_BxT)
  if config.normalize_advantages:
    mean, std = sequence_math.weighted_moments(advantages_BxT, token_weights_BxT)
    advantages_BxT = (advantages_BxT - mean) / (std + 1e-6)
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  policy_loss = sequence_math.weighted_token_mean(
      sequence_math.signed_weighted_nll(advantages_BxT, nll_BxT, config.negative_weights,
                                        config.negative_nll_cap), token_weights_BxT)
  loss = policy_loss + config.value_coef * value_loss
  metrics.update(
      loss=loss,
      policy_loss=policy_loss,
      nll=sequence_math.weighted_token_mean(nll_BxT, token_weights_BxT),
      mean_advantage=raw_mean_advantage,
  )
  return loss, metrics


VALUE_PRETRAIN_SPEC = base.LossSpec(
    name="value_pretrain", fn=value_pretrain_loss, config_cls=ValuePretrainConfig,
    requires=REQUIRES, needs_value_head=True)
OAC_SPEC = base.LossSpec(
    name="oac", fn=oac_loss, config_cls=OACConfig, requires=REQUIRES, needs_value_head=True)
