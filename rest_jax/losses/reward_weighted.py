"""Reward-weighted NLL: -(r - baseline) * log pi_theta per token.

ReST-EM's M-step for non-binary rewards: each sequence's tokens are weighted by its reward r
(in [0, 1]), so low-reward samples that pass a loose filter still count for less. A positive
`baseline` turns sequences with r < baseline into negative examples (their likelihood is pushed
down); 0 keeps the plain reward-weighted form (the paper's, never negative). Reduced with the
package-wide normalisation sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1) (see
`sequence_math`); the reward scales the numerator only, so the loss stays on the NLL scale.

Negative weights would make the loss unbounded below (pushing a token to probability 0 pays off
without limit); `negative_weights` bounds it (`sequence_math.signed_weighted_nll`): by default
("cap_nll") a negatively weighted token's NLL counts only up to `negative_nll_cap`.
"""
import dataclasses

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math


@dataclasses.dataclass(frozen=True)
class RewardWeightedConfig:
  """Reward-weighted NLL hyper-parameters.

  baseline: in [0, 1], subtracted from every sequence reward before weighting.
  negative_weights: how tokens with r < baseline count ('cap_nll', 'zero' or 'unbounded').
  negative_nll_cap: > 0, the NLL at which 'cap_nll' stops pushing such a token down.
  """

  baseline: float = 0.0
  negative_weights: str = "cap_nll"
  negative_nll_cap: float = 5.0

  def __post_init__(self):
    base.require_in_range(self, "baseline", 0.0, 1.0)
    base.require_choice(self, "negative_weights", sequence_math.NEGATIVE_WEIGHT_MODES)
    base.require_in_range(self, "negative_nll_cap", 0.0, low_inclusive=False)


REQUIRES = frozenset()


def reward_weighted_nll_loss(
    inputs: base.LossInputs, loss_params: dict, config: RewardWeightedConfig
) -> tuple[jax.Array, base.Metrics]:
  """sum w m (r - baseline)(-log pi) / max(sum w m, 1), negative part bounded."""
  del loss_params
  base.check_inputs(inputs, "reward_weighted_nll", REQUIRES)
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  scale_B = jax.lax.stop_gradient(inputs.rewards.astype(jnp.float32) - config.baseline)
  per_token_BxT = sequence_math.signed_weighted_nll(
      jnp.broadcast_to(scale_B[:, None], nll_BxT.shape), nll_BxT, config.negative_weights,
      config.negative_nll_cap)
  loss = sequence_math.weighted_token_mean(per_token_BxT, token_weights_BxT)
  metrics = {
      "loss": loss,
      "nll": sequence_math.weighted_token_mean(nll_BxT, token_weights_BxT),
      "mean_weight": sequence_math.weighted_token_mean(
          jnp.broadcast_to(scale_B[:, None], nll_BxT.shape), token_weights_BxT),
      "num_tokens": sequence_math.num_weighted_tokens(token_weights_BxT),
  }
  return loss, metrics


SPEC = base.LossSpec(name="reward_weighted_nll", fn=reward_weighted_nll_loss,
                     config_cls=RewardWeightedConfig, requires=REQUIRES)
