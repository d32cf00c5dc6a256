"""Hypotheses and labels for reward-model training data (the library of make_reward_data.py).

A reference-free reward model only learns the distinctions its data shows. Samples of one weak
policy (mean chrF about 0.2) taught the first shipped model that every output is mediocre: it
scored references like samples and rated a repeated reference far above the reference itself.
So one data set here mixes, per source:

  policy samples     from several checkpoints, weak to strong, labelled by the metric (chrF),
                     so the labels span the range a ReST run moves through
  the reference      labelled by the metric against itself (1.0 for chrF), so "a correct
                     translation" is the top of the scale (`reference_rate`: share of sources)
  corruptions        of the reference (`rest_jax.rewards.corruptions`: repetition, truncation,
                     copied source, shuffled words, another reference, runaway characters, a
                     near-empty output), labelled low whatever the metric says: chrF rates the
                     reference said twice 0.82, which is exactly the hack to unlearn
                     (`corruption_rate`: corruptions per source; `CorruptionLabel`: a fixed
                     label, 0.0 by default, or min(metric, cap))
  random word edits  of the reference (`perturbation_hypotheses`), the older policy-free mode

Each part is seeded per (seed, part, source index) (`corruptions.source_rng`) so adding a policy
or changing one rate leaves the other parts unchanged. Policy sampling (`sample_policy`) imports
JAX lazily; the rest is plain Python.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from typing import Callable, Sequence

import numpy as np

from rest_jax.rewards import base, corruptions

REFERENCE_ORIGIN = "reference"
PERTURBATION_ORIGIN = "random_perturbation"
CORRUPTION_PREFIX = "corruption:"
POLICY_PREFIX = "policy:"
SENTENCE_EDITS = ("repeat_sentence", "copy_source")


@dataclasses.dataclass(frozen=True)
class Hypothesis:
  text: str
  origin: str  # "policy:<path>", "random_perturbation", "reference" or "corruption:<kind>".


@dataclasses.dataclass(frozen=True)
class CorruptionLabel:
  """The label of a corruption: `value`, or min(metric score, `cap`) when cap is set."""
  value: float = 0.0
  cap: float | None = None

  def __call__(self, metric_score: float) -> float:
    return self.value if self.cap is None else min(float(metric_score), self.cap)

  def describe(self) -> str:
    return f"{self.value:g}" if self.cap is None else f"min(metric, {self.cap:g})"


def parse_corruption_label(text: str, flag: str = "--corruption_label") -> CorruptionLabel:
  """'0.0' -> fixed label; 'cap:0.2' -> min(metric, 0.2). ValueError naming `flag` otherwise."""
  problem = (f"{flag}={text!r} is invalid: expected a label in [0, 1] (e.g. 0.0) or "
             "'cap:X' with X in [0, 1] (label = min(metric, X))")
  text = text.strip()
  capped = text.startswith("cap:")
  try:
    value = float(text[len("cap:"):] if capped else text)
  except ValueError:
    raise ValueError(problem) from None
  if not 0.0 <= value <= 1.0:  # NaN fails too.
    raise ValueError(problem)
  return CorruptionLabel(cap=value) if capped else CorruptionLabel(value=value)


# ------------------------------------------------------------------------------- inputs
def load_pairs(task: str, splits: Sequence[str], tsv_paths: Sequence[str],
               max_examples: int | None) -> tuple[list[str], list[str], list[str]]:
  """(sources, references, descriptions) from TSV files, else from the task's splits.

  `max_examples` applies to each file or split (its first pairs).
  """
  sources, references, described = [], [], []
  if tsv_paths:
    from rest_jax.data import tsv  # pylint: disable=g-import-not-at-top
    for path in tsv_paths:
      pairs, report = tsv.read_tsv(path)
      pairs = pairs[:max_examples] if max_examples is not None else pairs
      sources += [s for s, _ in pairs]
      references += [r for _, r in pairs]
      skipped = f", {report.num_skipped} malformed lines skipped" if report.num_skipped else ""
      described.append(f"{path}: first {len(pairs)} of {report.num_pairs} pairs{skipped}")
    return sources, references, described
  from rest_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TF)
  for split in splits:
    examples = pipeline.load_examples(task, split, max_examples=max_examples)
    sources += [e.source for e in examples]
    references += [e.reference for e in examples]
    described.append(f"{task}/{split}: {len(examples)} pairs")
  return sources, references, described


# ---------------------------------------------------------------------------- hypotheses
def _count(rate: float, rng: random.Random) -> int:
  """floor(rate), plus one with probability frac(rate): `rate` on average, exact for integers."""
  whole = math.floor(rate)
  return whole + int(rng.random() < rate - whole)


def reference_hypotheses(references: Sequence[str], rate: float, seed: int
                         ) -> list[list[Hypothesis]]:
  """Each source's reference as a hypothesis, for a `rate` share of the sources (rate in [0, 1])."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"reference rate {rate!r} is invalid: expected a share in [0, 1]")
  return [[Hypothesis(reference, REFERENCE_ORIGIN)]
          if rate and corruptions.source_rng(seed, "reference", i).random() < rate else []
          for i, reference in enumerate(references)]


def corruption_hypotheses(sources: Sequence[str], references: Sequence[str], rate: float,
                          kinds: Sequence[str], seed: int) -> list[list[Hypothesis]]:
  """`rate` corruptions per source on average, kinds drawn uniformly among those that apply.

  A source's corruptions have different kinds while unused kinds remain.
  """
  if not rate >= 0.0 or math.isinf(rate):
    raise ValueError(f"corruption rate {rate!r} is invalid: expected a finite number >= 0")
  kinds = corruptions.parse_kinds(kinds)
  pool = list(references)
  out = []
  for i, (source, reference) in enumerate(zip(sources, references)):
    rng = corruptions.source_rng(seed, "corruption", i)
    made, used = [], set()
    for _ in range(_count(rate, rng) if rate else 0):
      unused = [k for k in kinds if k not in used] or kinds
      drawn = corruptions.random_corruption(unused, source, reference, rng, pool)
      if drawn is None and len(unused) < len(kinds):
        drawn = corruptions.random_corruption(kinds, source, reference, rng, pool)
      if drawn is not None:
        used.add(drawn[0])
        made.append(Hypothesis(drawn[1], CORRUPTION_PREFIX + drawn[0]))
    out.append(made)
  return out


def perturbation_hypotheses(sources: Sequence[str], references: Sequence[str],
                            samples_per_source: int, max_edits: int, sentence_edit_rate: float,
                            seed: int) -> list[list[Hypothesis]]:
  """References with 0..max_edits random word edits; `sentence_edit_rate` of them are instead
  the reference said twice or the copied source (the `random_perturbation` policy)."""
  rng = random.Random(seed)
  pool = [w for ref in references for w in ref.split()]

  def one(source: str, reference: str) -> str:
    if sentence_edit_rate and rng.random() < sentence_edit_rate:
      text = corruptions.corrupt(rng.choice(SENTENCE_EDITS), source, reference, rng)
      return source if text is None else text  # copy_source of a source equal to the reference.
    edits = rng.randint(0, max_edits)
    return " ".join(corruptions.random_word_edits(reference.split(), edits, pool, rng))

  return [[Hypothesis(one(source, reference), PERTURBATION_ORIGIN)
           for _ in range(samples_per_source)]
          for source, reference in zip(sources, references)]


def merge(*parts: Sequence[list[Hypothesis]]) -> list[list[Hypothesis]]:
  """Per source, the hypotheses of every part in order."""
  return [[h for part in per_source for h in part] for per_source in zip(*parts)]


# -------------------------------------------------------------------------------- labels
def label(metric: base.Reward, sources: Sequence[str], references: Sequence[str],
          hypotheses: Sequence[Sequence[Hypothesis]], corruption_label: CorruptionLabel
          ) -> list[list[float]]:
  """Per source and hypothesis: the metric score, or the corruption label for corruptions."""
  flat_sources = [s for s, hyps in zip(sources, hypotheses) for _ in hyps]
  flat_refs = [r for r, hyps in zip(references, hypotheses) for _ in hyps]
  flat = [h for hyps in hypotheses for h in hyps]
  scores = (base.score_batch(metric, flat_sources, [h.text for h in flat],
                             flat_refs if metric.needs_reference else None)
            if flat else np.zeros((0,), np.float32))
  labels = [corruption_label(s) if h.origin.startswith(CORRUPTION_PREFIX) else float(s)
            for h, s in zip(flat, scores)]
  out, start = [], 0
  for hyps in hypotheses:
    out.append(labels[start:start + len(hyps)])
    start += len(hyps)
  return out


def origin_summary(hypotheses: Sequence[Sequence[Hypothesis]],
                   labels: Sequence[Sequence[float]]) -> dict[str, dict[str, float]]:
  """origin -> {"hypotheses": count, "mean_label": mean}: policies and random edits in order of
  first appearance, then the reference, then the corruption kinds in `corruptions.KINDS` order."""
  by_origin: dict[str, list[float]] = {}
  for hyps, row in zip(hypotheses, labels):
    for h, value in zip(hyps, row):
      by_origin.setdefault(h.origin, []).append(value)
  rank = {REFERENCE_ORIGIN: 1, **{CORRUPTION_PREFIX + k: 2 + i
                                  for i, k in enumerate(corruptions.KINDS)}}
  ordered = sorted(by_origin, key=lambda origin: rank.get(origin, 0))  # Stable: first seen.
  return {origin: {"hypotheses": len(by_origin[origin]),
                   "mean_label": round(float(np.mean(by_origin[origin])), 4)}
          for origin in ordered}


# ------------------------------------------------------------------------ policy samples
@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  samples_per_source: int = 4
  temperature: float = 0.8
  top_k: int = 0
  max_decode_len: int = 64
  max_source_len: int = 64  # Longer sources are cut to this many tokens (EOS kept).
  batch_size: int = 32  # Sources per sampler call.
  seed: int = 0


def sample_policy(policy_path: str, sources: Sequence[str], options: SamplingOptions,
                  policy_index: int = 0, *, checkpoint_step: int | None = None,
                  vocabulary_spec: str | None = None,
                  log: Callable[[str], None] = print) -> list[list[Hypothesis]]:
  """`samples_per_source` samples per source from a ReST policy checkpoint.

  `policy_path`: a workdir, a `Checkpointer` directory or one step directory of it. Sources
  are sampled in batches of similar length (power-of-two padding, so a few compiled shapes);
  batch k of policy i uses the key fold_in(fold_in(PRNGKey(seed), i), k).
  """
  # pylint: disable=g-import-not-at-top  (only this function needs JAX)
  import jax
  from rest_jax import sharding
  from rest_jax.configs import SamplingConfig
  from rest_jax.models.transformer import EOS_ID, PAD_ID
  from rest_jax.rewards import reward_model as rm
  from rest_jax.rewards import reward_model_training
  # pylint: enable=g-import-not-at-top
  policy = reward_model_training.load_policy_for_sampling(
      policy_path, checkpoint_step, vocabulary_spec=vocabulary_spec)
  log(f"policy {policy_path}: step {policy.step}, vocabulary {policy.vocabulary_name!r}")
  config = SamplingConfig(max_decode_len=options.max_decode_len,
                          temperature=options.temperature, top_k=options.top_k,
                          num_samples=options.samples_per_source)
  sampler = _sampler(policy, config)
  inputs, truncated = rm.tokenize(policy.vocabulary, sources, options.max_source_len)
  if truncated:
    log(f"cut {truncated} source(s) to {options.max_source_len} tokens")
  order = np.argsort([len(x) for x in inputs], kind="stable")
  batch_size = rm.round_batch_size(options.batch_size, policy.mesh)
  key = jax.random.fold_in(jax.random.PRNGKey(options.seed), policy_index)
  texts: list[list[str]] = [[] for _ in sources]
  start_time = time.time()
  for k, start in enumerate(range(0, len(order), batch_size)):
    rows = order[start:start + batch_size]
    length = rm.bucket_length(max(len(inputs[i]) for i in rows), options.max_source_len)
    batch = rm.pad_rows([inputs[i] for i in rows], length, batch_size)
    result = sampler(policy.params, sharding.shard_batch(batch, policy.mesh),
                     jax.random.fold_in(key, k))
    tokens = np.asarray(jax.device_get(result.tokens))[:len(rows)]
    for i, per_source in zip(rows, tokens):
      texts[i] = [_decode(policy.vocabulary, ids.tolist(), EOS_ID, PAD_ID) for ids in per_source]
    log(f"sampled {min(start + batch_size, len(order))}/{len(order)} sources "
        f"({time.time() - start_time:.0f} s)")
  origin = POLICY_PREFIX + policy_path
  return [[Hypothesis(text, origin) for text in row] for row in texts]


_SAMPLERS: dict = {}


def _sampler(policy, config):
  """One jitted sampler per (model config, sampling config, mesh): the weak-to-strong
  checkpoints of one run share their compilations (about 6 s per length bucket on a CPU)."""
  from rest_jax import sampling  # pylint: disable=g-import-not-at-top
  key = (policy.model.config, config, policy.mesh)
  if key not in _SAMPLERS:
    _SAMPLERS[key] = sampling.make_sampler(policy.model, config, policy.mesh,
                                           policy.param_shardings)
  return _SAMPLERS[key]


def _decode(vocabulary, ids: list[int], eos_id: int, pad_id: int) -> str:
  ids = ids[:ids.index(eos_id)] if eos_id in ids else ids
  return vocabulary.decode([i for i in ids if i != pad_id])


def sha256_of(path: str) -> str:
  """Hex SHA-256 of a file, read in 1 MiB blocks (reward data files can be large)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
