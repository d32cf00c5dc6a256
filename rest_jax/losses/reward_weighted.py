"""Reward-weighted NLL: -(r - baseline) * log pi_theta per token.

ReST-EM's M-step for non-binary rewards: each sequence's tokens are weighted by its reward r
(in [0, 1]), so low-reward samples that pass a loose filter still count for less. A positive
`baseline` turns sequences with r < baseline into negative examples (their likelihood is pushed
down); 0 keeps the plain reward-weighted form. Reduced with the package-wide normalisation
sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1) (see `sequence_math`); the reward scales the
numerator only, so the loss stays on the NLL scale.
"""
import dataclasses

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math


@dataclasses.dataclass(frozen=True)
class RewardWeightedConfig:
  """baseline in [0, 1]: subtracted from every sequence reward before weighting."""

  baseline: float = 0.0

  def __post_init__(self):
    base.require_in_range(self, "baseline", 0.0, 1.0)


REQUIRES = frozenset()


def reward_weighted_nll_loss(
    inputs: base.LossInputs, loss_params: dict, config: RewardWeightedConfig
) -> tuple[jax.Array, base.Metrics]:
  """sum w m (r - baseline)(-log pi) / max(sum w m, 1)."""
  del loss_params
  base.check_inputs(inputs, "reward_weighted_nll", REQUIRES)
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  scale_B = jax.lax.stop_gradient(inputs.rewards.astype(jnp.float32) - config.baseline)
  loss = sequence_math.weighted_token_mean(scale_B[:, None] * nll_BxT, token_weights_BxT)
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
