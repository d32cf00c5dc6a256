"""Grow: sample N outputs per training source from the current policy and score them.

Shards are produced and written one at a time (see `grown_data`), so a killed Grow resumes at
the first missing shard. The samples of a source are drawn with the key
`fold_in(fold_in(seed, g), source_id)`, so they do not depend on batching, shard layout or the
number of processes: a regenerated shard is identical to the one an uninterrupted run writes, and
a multi-process Grow produces the same records as a single process. Each source's human
reference is scored too and stored as the `is_original` record, so Improve can keep the
original data intact or filter it like the samples.

Behaviour log-probs. A sample's `behaviour_logprobs` are the per-token log-probs of the
distribution it was actually drawn from (temperature, top-k and top-p applied), so an
importance-weighted loss can use them as pi_b. A human reference was drawn from no policy: its
behaviour log-probs are unknown and stored as zeros, flagged by `is_original=True`; a loss that
reads behaviour log-probs must not see originals (`ImproveConfig` refuses that combination).

References and reference-based rewards. The reference is scored like a sample; under a
reference-based reward (chrF, BLEU, exact match) that is its score against itself, i.e. the
maximum. That is harmless with `original_data='keep'` (references are kept unfiltered and left
out of per-source statistics) or `'drop'`, and meaningless with `'filter'` (every reference
would pass every threshold and set `interpolate`'s per-source max), which `rest_loop.run`
refuses.

Truncated samples. A sample that reaches `max_decode_len` without EOS is unfinished. What Grow
does with it is `GrowConfig.truncated_samples` (the paper is silent):
  'zero_reward' (default)  stored, with reward 0: no threshold above 0 keeps it, and reward- or
                           advantage-weighted losses count it as a failure; still inspectable.
  'drop'                   not stored at all.
  'keep'                   stored and scored as if finished.
A stored truncated sample carries no EOS, so a loss never teaches the policy to stop there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import tqdm

from rest_jax import batching, configs, grown_data, preemption
from rest_jax import sharding as sharding_lib
from rest_jax.evaluate import detokenize, strip_after_eos
from rest_jax.models.transformer import EOS_ID
from rest_jax.rewards.base import score_batch

logger = logging.getLogger(__name__)


TRUNCATED_SAMPLES = ("zero_reward", "drop", "keep")


@dataclasses.dataclass(frozen=True)
class GrowConfig:
  """How Grow samples and what it stores.

  Toy defaults, sized for CPU tests and the embedded corpus. The paper sampled N=100 per source
  on IWSLT14 (25 on WMT20, 1000 on the web domain) at temperature 0.8 (kept here) and decoded up
  to 128 tokens; `experiments/iwslt14_de_en/*.gin` and `wmt20_zh_en/rest.gin` set those values.
  """

  num_samples: int = 8  # N samples per source. Toy default (paper: 100 IWSLT, 25 WMT).
  temperature: float = 0.8  # The paper's.
  top_k: int = 0
  top_p: float = 1.0
  max_decode_len: int = 64  # Toy default (paper: 128).
  max_sources: int | None = None  # Grow from the first M training sources only.
  sources_per_shard: int = 512
  batch_size: int = 64  # Sources per sampler call (global, across processes).
  seed: int = 0
  # Samples cut at max_decode_len without EOS: 'zero_reward', 'drop' or 'keep' (module doc).
  truncated_samples: str = "zero_reward"

  def __post_init__(self):
    self.sampling_config()  # Validates the sampling fields.
    configs.check_choice("GrowConfig", "truncated_samples", self.truncated_samples,
                         TRUNCATED_SAMPLES)
    for field in ("sources_per_shard", "batch_size"):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"GrowConfig.{field}={value!r} is invalid: expected a positive integer.")
    if self.max_sources is not None and self.max_sources <= 0:
      raise ValueError(f"GrowConfig.max_sources={self.max_sources!r} is invalid: expected a "
                       "positive integer or None (all sources).")

  def sampling_config(self) -> configs.SamplingConfig:
    return configs.SamplingConfig(max_decode_len=self.max_decode_len,
                                  temperature=self.temperature, top_k=self.top_k,
                                  top_p=self.top_p, num_samples=self.num_samples)


def sample_counts(config: GrowConfig, num_sources: int) -> tuple[int, int]:
  """(samples drawn, reward calls) of one Grow step over `num_sources` sources: N samples for
  each of the first `max_sources`, each scored once, and every source's reference scored once.

  Truncated samples count as drawn and scored whatever `truncated_samples` does with them. The
  online-RL phase logs the same two counters (`rest_jax.online`), for comparisons per sample.
  """
  sampled = num_sources if config.max_sources is None else min(num_sources, config.max_sources)
  samples = config.num_samples * sampled
  return samples, samples + num_sources


@dataclasses.dataclass
class GrowSummary:
  grow_step: int
  num_shards: int
  shards_written: int
  num_truncated: int = 0  # Samples of the shards written here that ended without EOS.


def _shard_records(examples: Sequence[Any], tokens: np.ndarray, logprobs: np.ndarray,
                   hyps: list[str], sample_rewards: np.ndarray, ref_rewards: np.ndarray,
                   grow_step: int, policy_step: int, seed: int,
                   truncated_samples: str = "zero_reward") -> grown_data.GrownRecords:
  """The records of one shard; `logprobs` are the sampling distribution's [C, N, T]."""
  n = tokens.shape[1]
  rows: dict[str, list] = {k: [] for k in ("source_id", "sample_index", "reward", "is_original",
                                           "source_tokens", "sample_tokens",
                                           "behaviour_logprobs", "source_text", "sample_text")}

  def add(ex, index, reward, original, sample, lps, text):
    rows["source_id"].append(ex.source_id)
    rows["sample_index"].append(index)
    rows["reward"].append(reward)
    rows["is_original"].append(original)
    rows["source_tokens"].append(np.asarray(ex.inputs, np.int32))
    rows["sample_tokens"].append(sample)
    rows["behaviour_logprobs"].append(lps)
    rows["source_text"].append(ex.source)
    rows["sample_text"].append(text)

  for b, ex in enumerate(examples):
    targets = np.asarray(ex.targets, np.int32)
    # No policy produced the reference: behaviour log-probs unknown (zeros, is_original=True).
    add(ex, -1, ref_rewards[b], True, targets, np.zeros(len(targets), np.float32), ex.reference)
    for j in range(n if b < len(tokens) else 0):  # Sources past max_sources: original only.
      sample = strip_after_eos(tokens[b, j])
      reward = sample_rewards[b, j]
      if (tokens[b, j] == EOS_ID).any():
        sample = np.concatenate([sample, [EOS_ID]])
      elif truncated_samples == "drop":  # Cut at max_decode_len: no EOS (module docstring).
        continue
      elif truncated_samples == "zero_reward":
        reward = 0.0
      sample = sample.astype(np.int32)
      add(ex, j, reward, False, sample, logprobs[b, j, :len(sample)].astype(np.float32),
          hyps[b * n + j])
  m = len(rows["source_id"])
  return grown_data.GrownRecords(
      source_id=np.asarray(rows["source_id"], np.int64),
      sample_index=np.asarray(rows["sample_index"], np.int32),
      reward=np.asarray(rows["reward"], np.float32),
      is_original=np.asarray(rows["is_original"], bool),
      grow_step=np.full(m, grow_step, np.int32), policy_step=np.full(m, policy_step, np.int64),
      seed=np.full(m, seed, np.int64), source_tokens=rows["source_tokens"],
      sample_tokens=rows["sample_tokens"], behaviour_logprobs=rows["behaviour_logprobs"],
      source_text=rows["source_text"], sample_text=rows["sample_text"])


def grow(grow_step: int, params: Any, policy_step: int, examples: Sequence[Any],
         sampler: Callable, vocab, reward, store: grown_data.GrowStore, config: GrowConfig,
         mesh, source_len: int, num_global_sources: int | None = None,
         settings: dict[str, Any] | None = None) -> GrowSummary:
  """Writes every missing shard of Grow step `grow_step` for this process's `examples`.

  Every training source gets its original (human reference) record, so the grown set contains
  the whole original data D; the first `config.max_sources` sources also get N samples. With
  several processes, `examples` is this process's share (global position = local * P + p) of
  `num_global_sources` sources; every process makes the same sequence of (collective) sampler
  calls, padding with dummy rows.
  """
  processes, me = jax.process_count(), jax.process_index()
  total = len(examples) if num_global_sources is None else num_global_sources
  to_sample = total if config.max_sources is None else min(total, config.max_sources)
  slots = math.ceil(total / processes)  # Source slots per process (the same on every process).
  sample_slots = math.ceil(to_sample / processes)
  per_shard = max(1, config.sources_per_shard // processes)
  local_shards = max(1, math.ceil(slots / per_shard))
  num_shards = local_shards * processes
  store.ensure_manifest(dict(settings or {}, grow=dataclasses.asdict(config),
                             num_shards=num_shards, processes=processes))
  local_batch = config.batch_size // processes
  if config.batch_size % processes or local_batch % max(
      1, sharding_lib.num_batch_shards(mesh) // processes):
    raise ValueError(f"GrowConfig.batch_size={config.batch_size} must split evenly over "
                     f"{processes} processes and {sharding_lib.num_batch_shards(mesh)} "
                     "data-parallel shards.")
  written = truncated = 0
  base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), grow_step)
  bar = tqdm.tqdm(range(local_shards), desc=f"grow {grow_step} (shards)",
                  disable=me != 0)
  for k in bar:
    shard_index = k * processes + me
    if all(store.has_shard(k * processes + p, num_shards) for p in range(processes)):
      continue
    started = time.monotonic()
    start = k * per_shard
    chunk = list(examples[start:start + per_shard])
    sampled = [ex for j, ex in enumerate(chunk) if (start + j) * processes + me < to_sample]
    call_slots = max(0, min(per_shard, sample_slots - start))
    tokens, logprobs = _sample_chunk(sampled, call_slots, sampler, params, base_key, local_batch,
                                     source_len, mesh, config.num_samples,
                                     config.max_decode_len)
    n = config.num_samples
    hyps = detokenize(vocab, tokens.reshape(len(sampled) * n, tokens.shape[-1]))
    sources = [ex.source for ex in sampled for _ in range(n)]
    refs = [ex.reference for ex in sampled for _ in range(n)]
    sample_rewards = score_batch(reward, sources, hyps, refs).reshape(-1, n)
    ref_rewards = score_batch(reward, [ex.source for ex in chunk], [ex.reference for ex in chunk],
                              [ex.reference for ex in chunk])
    store.write_shard(shard_index, num_shards, _shard_records(
        chunk, tokens, logprobs, hyps, sample_rewards, ref_rewards, grow_step, policy_step,
        config.seed, config.truncated_samples), wall_s=time.monotonic() - started)
    written += 1
    finished = (tokens == EOS_ID).any(-1)
    truncated += int(finished.size - finished.sum())
    if preemption.stop_requested():  # The shards written so far are kept; resume goes on here.
      raise preemption.Preempted(f"Grow step {grow_step}: stopped after shard {shard_index} of "
                                 f"{num_shards}.")
  sharding_lib.barrier(f"grow{grow_step}_shards_written")  # Every shard exists before reading.
  logger.info("Grow step %d: wrote %d shard(s) of %d; %d sample(s) reached max_decode_len=%d "
              "without EOS (truncated_samples=%r).", grow_step, written, num_shards, truncated,
              config.max_decode_len, config.truncated_samples)
  return GrowSummary(grow_step, num_shards, written, truncated)


def _sample_chunk(chunk, chunk_slots, sampler, params, base_key, local_batch, source_len, mesh,
                  num_samples, max_decode_len):
  """Samples every source of a chunk; returns (tokens [C,N,T], log-probs [C,N,T]) where the
  log-probs are those of the sampling distribution (temperature, top-k, top-p applied).

  Makes ceil(chunk_slots / local_batch) sampler calls whatever len(chunk) is, so processes with
  fewer sources still join every collective call.
  """
  tokens = [np.zeros((0, num_samples, max_decode_len), np.int32)]
  logprobs = [np.zeros((0, num_samples, max_decode_len), np.float32)]
  dummy = np.array([EOS_ID], np.int32)
  fold = jax.jit(jax.vmap(jax.random.fold_in, (None, 0)))
  for start in range(0, chunk_slots, local_batch):
    part = chunk[start:start + local_batch]
    real = len(part)
    rows = [ex.inputs for ex in part] + [dummy] * (local_batch - real)
    ids = np.array([ex.source_id for ex in part] + [0] * (local_batch - real), np.uint32)
    inputs = sharding_lib.shard_batch(batching.pad_rows(rows, source_len, np.int32), mesh)
    keys = sharding_lib.shard_batch(np.asarray(fold(base_key, ids)), mesh)
    out = sampler(params, inputs, keys)
    tokens.append(sharding_lib.local_to_host(out.tokens)[:real])
    logprobs.append(sharding_lib.local_to_host(out.sample_logprobs)[:real])
  return np.concatenate(tokens), np.concatenate(logprobs)
