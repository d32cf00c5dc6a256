"""Evaluation: decode a split, score it with the reward, and summarise it.

Used after every BC/Grow/Improve phase (full validation, and test) and inside Improve rounds for
early stopping (a fixed validation subset). Decoding is greedy or beam search; Best-of-N samples
N outputs per source at a temperature and keeps the highest-reward one for each n <= N.

With several processes every process holds the whole evaluation set, feeds its equal share of
each global batch and receives the gathered tokens, so all processes compute the same metrics
(only process 0 writes them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
import tqdm

from rest_jax import batching, configs, sampling, text_metrics
from rest_jax import sharding as sharding_lib
from rest_jax.models.transformer import EOS_ID, Transformer
from rest_jax.rewards.base import score_batch

DECODE_METHODS = ("greedy", "beam")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  decode: str = "greedy"
  beam_size: int = 4
  length_penalty: float = 0.6
  batch_size: int = 128
  max_decode_len: int = 64
  best_of_n: tuple[int, ...] = ()  # e.g. (1, 2, 4, 8): Best-of-N curve on validation.
  best_of_n_temperature: float = 0.8
  # Sampled reasoning metrics of every evaluated split (rest_jax.reasoning_eval): unbiased pass@k
  # and majority vote maj@k for each k listed, from pass_at_k_samples samples per problem at
  # pass_at_k_temperature, scored by the run's (verifier) reward. () = off.
  pass_at_k: tuple[int, ...] = ()
  pass_at_k_samples: int = 16
  pass_at_k_temperature: float = 0.7
  # A reward spec (e.g. 'learned:path=/rm') that reranks the same samples: Best-of-N by that
  # reward, judged by the run's verifier, for each k of pass_at_k. None = off.
  pass_at_k_reranker: str | None = None
  # A reward spec that every reported metric uses (the results' reward column, Best-of-N, pass@k
  # and maj@k), when it differs from the run's reward: e.g. train on a strict verifier that checks
  # every step and report the task's own final-answer accuracy. Early stopping still selects on
  # the run's reward. None = the run's reward.
  reward: str | None = None

  def __post_init__(self):
    configs.check_choice("EvalConfig", "decode", self.decode, DECODE_METHODS)
    for field in ("beam_size", "batch_size", "max_decode_len"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"EvalConfig.{field}={value!r} is invalid: expected a positive integer.")
    if any((not isinstance(n, int)) or n <= 0 for n in self.best_of_n):
      raise ValueError(f"EvalConfig.best_of_n={self.best_of_n!r} is invalid: expected positive "
                       "integers.")
    samples = self.pass_at_k_samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples <= 0:
      raise ValueError(f"EvalConfig.pass_at_k_samples={samples!r} is invalid: expected a "
                       "positive integer.")
    if any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= samples
           for k in self.pass_at_k):
      raise ValueError(f"EvalConfig.pass_at_k={self.pass_at_k!r} is invalid: expected integers "
                       f"in [1, pass_at_k_samples={samples}].")
    if not self.pass_at_k_temperature > 0:
      raise ValueError(f"EvalConfig.pass_at_k_temperature={self.pass_at_k_temperature!r} is "
                       "invalid: must be > 0.")
    for field in ("pass_at_k_reranker", "reward"):
      spec = getattr(self, field)
      if spec is None:
        continue
      from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
      name = registry.parse_spec(spec)[0] if isinstance(spec, str) else None
      if name not in registry.list_rewards():
        raise ValueError(f"EvalConfig.{field}={spec!r} is invalid: unknown reward {name!r}; "
                         f"valid: {registry.list_rewards()}.")


def strip_after_eos(tokens: np.ndarray) -> np.ndarray:
  """Tokens before the first EOS (EOS and padding removed)."""
  eos = np.flatnonzero(tokens == EOS_ID)
  out = tokens[: eos[0]] if len(eos) else tokens
  return out[out != 0]


def detokenize(vocab, tokens_NxT: np.ndarray) -> list[str]:
  return [vocab.decode(strip_after_eos(row).tolist()) for row in tokens_NxT]


class Evaluator:
  """Compiled decoders for one model/mesh, and the reward to score with."""

  def __init__(self, model: Transformer, mesh, param_shardings, vocab, reward,
               config: EvalConfig = EvalConfig(), source_len: int = 48):
    self.model, self.mesh, self.vocab, self.reward, self.config = (
        model, mesh, vocab, reward, config)
    self.source_len = source_len
    if config.batch_size % sharding_lib.num_batch_shards(mesh):
      raise ValueError(f"EvalConfig.batch_size={config.batch_size} must be divisible by the "
                       f"{sharding_lib.num_batch_shards(mesh)} data-parallel mesh shards.")
    if config.decode == "greedy":
      greedy = sampling.make_sampler(
          model, configs.SamplingConfig(max_decode_len=config.max_decode_len, temperature=0.0),
          mesh, param_shardings)
      self._decode = lambda p, x: greedy(p, x, jax.random.PRNGKey(0)).tokens[:, 0]
    else:
      beam = sampling.make_beam_search(
          model, configs.BeamSearchConfig(max_decode_len=config.max_decode_len,
                                          beam_size=config.beam_size,
                                          length_penalty=config.length_penalty),
          mesh, param_shardings)
      self._decode = lambda p, x: beam(p, x).tokens[:, 0]
    self._best_of_n = None
    if config.best_of_n:
      self._best_of_n = sampling.make_sampler(
          model, configs.SamplingConfig(max_decode_len=config.max_decode_len,
                                        temperature=config.best_of_n_temperature,
                                        num_samples=max(config.best_of_n)),
          mesh, param_shardings)

  def _batches(self, examples: Sequence[Any], batch_size: int):
    """Yields (number of real rows, this process's share of the padded source batch)."""
    for start in range(0, len(examples), batch_size):
      chunk = [ex.inputs for ex in examples[start:start + batch_size]]
      real = len(chunk)
      chunk = chunk + [chunk[0]] * (batch_size - real)
      padded = batching.pad_rows(chunk, self.source_len, np.int32)
      yield real, padded[sharding_lib.process_rows(batch_size)]

  def translate(self, params, examples: Sequence[Any], desc: str = "decode") -> list[str]:
    hyps: list[str] = []
    bs = self.config.batch_size
    for real, local in tqdm.tqdm(self._batches(examples, bs), total=-(-len(examples) // bs),
                                 desc=desc, leave=False, disable=jax.process_index() != 0):
      tokens = sharding_lib.to_host(self._decode(params, sharding_lib.shard_batch(local,
                                                                                  self.mesh)))
      hyps.extend(detokenize(self.vocab, tokens[:real]))
    return hyps

  def evaluate(self, params, examples: Sequence[Any], desc: str = "evaluate", reward=None
               ) -> tuple[dict[str, float], list[str], np.ndarray]:
    """(summary, hypotheses, per-example rewards) for one set of examples, scored by `reward`
    (default: the evaluator's)."""
    hyps = self.translate(params, examples, desc)
    sources = [ex.source for ex in examples]
    refs = [ex.reference for ex in examples]
    rewards = score_batch(self.reward if reward is None else reward, sources, hyps, refs)
    summary = text_metrics.summarize_translations(sources, hyps, refs, rewards)
    return summary, hyps, rewards

  def best_of_n(self, params, examples: Sequence[Any], rng: jax.Array, reward=None
                ) -> list[tuple[int, float]]:
    """[(n, mean reward (0-100) of the best of the first n samples)] for the configured ns,
    scored by `reward` (default: the evaluator's)."""
    reward = self.reward if reward is None else reward
    if self._best_of_n is None:
      return []
    n_max = max(self.config.best_of_n)
    bs = self.config.batch_size
    rewards = []
    for k, (real, local) in enumerate(self._batches(examples, bs)):
      out = self._best_of_n(params, sharding_lib.shard_batch(local, self.mesh),
                            jax.random.fold_in(rng, k))
      tokens = sharding_lib.to_host(out.tokens)[:real]
      chunk = examples[k * bs:k * bs + real]
      hyps = detokenize(self.vocab, tokens.reshape(real * n_max, -1))
      sources = [ex.source for ex in chunk for _ in range(n_max)]
      refs = [ex.reference for ex in chunk for _ in range(n_max)]
      rewards.append(score_batch(reward, sources, hyps, refs).reshape(real, n_max))
    table = np.concatenate(rewards)
    return [(n, float(100.0 * table[:, :n].max(axis=1).mean())) for n in self.config.best_of_n]
