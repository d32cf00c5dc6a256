"""Rewards for ReST: one interface, every value in [0, 1].

  base                    `Reward` (name, needs_reference, score) and the checked `score_batch`
  metric_rewards          sentence chrF and BLEU from sacrebleu, /100
  verifiers               exact match and predicate verifiers, {0, 1}
  reward_model            the learned reference-free reward model, its checkpoints, LearnedReward
  reward_model_training   training it from scored or preference TSVs; loading policies to sample
  corruptions             broken versions of a reference (repetition, truncation, ...) a hacked
                          policy drifts towards: negatives for training, probes for checking
  reward_data             hypotheses and labels for reward-model data (make_reward_data.py)
  probes                  per-corruption win rates of a reward, held-out Spearman
  registry                `make_reward(name, **kwargs)`, `reward_from_spec("learned:path=...")`

Only the light modules are imported here; `reward_model` and `reward_model_training` pull in JAX
and are imported by the registry when it is used.
"""

from rest_jax.rewards.base import Reward, score_batch
from rest_jax.rewards.metric_rewards import BleuReward, ChrfReward
from rest_jax.rewards.verifiers import ExactMatchVerifier, PredicateVerifier

__all__ = ["Reward", "score_batch", "BleuReward", "ChrfReward", "ExactMatchVerifier",
           "PredicateVerifier"]
