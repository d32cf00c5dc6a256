"""Behaviour cloning: token NLL on the (filtered) data.

The ReST paper's strongest Improve-step loss on reward, and the loss of the initial policy
("G=0 I=0"). Per token: -log pi_theta(y_t | s_t), optionally label-smoothed as in standard MT
training; reduced with the package-wide normalisation
sum_{b,t} w_b m_bt x_bt / max(sum_{b,t} w_b m_bt, 1) (see `sequence_math`).
"""
import dataclasses

import jax
import jax.numpy as jnp

from rest_jax.losses import base
from rest_jax.losses import sequence_math


@dataclasses.dataclass(frozen=True)
class BCConfig:
  """label_smoothing in [0, 1): mass spread uniformly over the vocabulary (0 = plain NLL)."""

  label_smoothing: float = 0.0

  def __post_init__(self):
    base.require_in_range(self, "label_smoothing", 0.0, 1.0, high_inclusive=False)


REQUIRES = frozenset()


def bc_loss(
    inputs: base.LossInputs, loss_params: dict, config: BCConfig
) -> tuple[jax.Array, base.Metrics]:
  """Weighted, masked token NLL (optionally label-smoothed)."""
  del loss_params
  base.check_inputs(inputs, "bc", REQUIRES)
  token_weights_BxT = sequence_math.token_weights(inputs.mask, inputs.weights)
  nll_BxT = -inputs.token_logprobs.astype(jnp.float32)
  per_token_BxT = nll_BxT
  if config.label_smoothing > 0.0:
    log_probs_BxTxV = jax.nn.log_softmax(inputs.logits.astype(jnp.float32), axis=-1)
    uniform_nll_BxT = -jnp.mean(log_probs_BxTxV, axis=-1)
    per_token_BxT = ((1.0 - config.label_smoothing) * nll_BxT
                     + config.label_smoothing * uniform_nll_BxT)
  loss = sequence_math.weighted_token_mean(per_token_BxT, token_weights_BxT)
  metrics = {
      "loss": loss,
      "nll": sequence_math.weighted_token_mean(nll_BxT, token_weights_BxT),
      "num_tokens": sequence_math.num_weighted_tokens(token_weights_BxT),
  }
  return loss, metrics


SPEC = base.LossSpec(name="bc", fn=bc_loss, config_cls=BCConfig, requires=REQUIRES)
