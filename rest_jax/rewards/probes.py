"""Reward "unit tests": does a reward score the reference above each broken version of it?

The ReST paper probed its learned reward this way: repeating a sentence *raised* its reward, a
warning that a policy optimised against it could gain reward by degenerating. Here every
corruption kind of `rest_jax.rewards.corruptions` is one probe. For each (source, reference)
pair and kind the corrupted hypothesis is made once (seeded per pair, so adding pairs or kinds
does not change the others), and all hypotheses are scored in one `score_batch` call.

Per kind the summary has the number of pairs the kind applies to, the mean reward of the
reference and of the corruption on those pairs, and the *win rate*: the share of those pairs
in which the reference scores strictly higher than its corruption (a tie is a loss: a reward
that cannot tell them apart gives a policy nothing to lose by degenerating). A reward passes
the probes at `min_win_rate` if every kind that applies to at least one pair reaches it.

Reference-based rewards (chrF, BLEU) are given the true reference, so they pass trivially;
reference-free ones see only (source, hypothesis).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from rest_jax.rewards import base, corruptions

REFERENCE = "reference"


@dataclasses.dataclass(frozen=True)
class ProbeSet:
  """Corrupted hypotheses: kind -> (pair indices, hypotheses) for the pairs it applies to."""
  sources: list[str]
  references: list[str]
  variants: dict[str, tuple[list[int], list[str]]]


@dataclasses.dataclass(frozen=True)
class KindResult:
  kind: str
  num_pairs: int
  mean: float  # Mean reward of the corruption.
  reference_mean: float  # Mean reward of the reference on the same pairs.
  win_rate: float  # Share of pairs with reward(reference) > reward(corruption); NaN if none.

  def passes(self, min_win_rate: float) -> bool:
    return self.num_pairs == 0 or self.win_rate >= min_win_rate


def make_probe_set(sources: Sequence[str], references: Sequence[str],
                   kinds: Sequence[str] = corruptions.KINDS, seed: int = 0) -> ProbeSet:
  if len(sources) != len(references):
    raise ValueError(f"make_probe_set: {len(sources)} sources but {len(references)} references")
  kinds = corruptions.parse_kinds(kinds)
  pool = list(references)
  variants = {}
  for kind in kinds:
    indices, texts = [], []
    for i, (source, reference) in enumerate(zip(sources, references)):
      text = corruptions.corrupt(kind, source, reference,
                                 corruptions.source_rng(seed, f"probe:{kind}", i), pool)
      if text is not None:
        indices.append(i)
        texts.append(text)
    variants[kind] = (indices, texts)
  return ProbeSet(list(sources), list(references), variants)


def score_probe_set(reward: base.Reward, probes: ProbeSet) -> dict[str, np.ndarray]:
  """'reference' -> scores [num_pairs]; kind -> scores of its variants (aligned with indices)."""
  idx = list(range(len(probes.sources)))
  all_indices, hypotheses = list(idx), list(probes.references)
  for indices, texts in probes.variants.values():
    all_indices += indices
    hypotheses += texts
  scores = base.score_batch(
      reward, [probes.sources[i] for i in all_indices], hypotheses,
      [probes.references[i] for i in all_indices] if reward.needs_reference else None)
  out, start = {REFERENCE: scores[:len(idx)]}, len(idx)
  for kind, (indices, _) in probes.variants.items():
    out[kind] = scores[start:start + len(indices)]
    start += len(indices)
  return out


def summarize(probes: ProbeSet, scores: dict[str, np.ndarray]) -> list[KindResult]:
  """One KindResult per kind, in the probe set's order."""
  reference = scores[REFERENCE]
  results = []
  for kind, (indices, _) in probes.variants.items():
    if not indices:
      results.append(KindResult(kind, 0, math.nan, math.nan, math.nan))
      continue
    variant, ref = scores[kind], reference[np.asarray(indices, np.int64)]
    results.append(KindResult(kind, len(indices), float(variant.mean()), float(ref.mean()),
                              float(np.mean(ref > variant))))
  return results


@dataclasses.dataclass(frozen=True)
class ProbeReport:
  num_pairs: int
  reference_mean: float  # Mean reward of the references over all pairs.
  kinds: list[KindResult]

  def failing(self, min_win_rate: float) -> list[KindResult]:
    return [r for r in self.kinds if not r.passes(min_win_rate)]


def run_probes(reward: base.Reward, sources: Sequence[str], references: Sequence[str],
               kinds: Sequence[str] = corruptions.KINDS, seed: int = 0) -> ProbeReport:
  """Makes the probe set of these pairs, scores it with `reward` and summarises it."""
  probes = make_probe_set(sources, references, kinds, seed)
  scores = score_probe_set(reward, probes)
  return ProbeReport(len(sources), float(scores[REFERENCE].mean()), summarize(probes, scores))


def format_table(reports: dict[str, ProbeReport], min_win_rate: float | None = None) -> str:
  """Markdown: one row per kind; per reward its mean, Δ vs the reference and the win rate."""
  names = list(reports)
  first = reports[names[0]]
  lines = ["| probe | pairs | " + " | ".join(f"{name} mean | Δ vs ref | ref wins"
                                             for name in names) + " |",
           "|---|---:|" + "---:|---:|---:|" * len(names),
           f"| {REFERENCE} | {first.num_pairs} | "
           + " | ".join(f"{r.reference_mean:.3f} | | " for r in reports.values()) + " |"]
  for k, kind in enumerate(first.kinds):
    cells = [_cell(report.kinds[k], min_win_rate) for report in reports.values()]
    lines.append(f"| {kind.kind} | {kind.num_pairs} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cell(r: KindResult, min_win_rate: float | None) -> str:
  if not r.num_pairs:
    return "n/a | | "
  flag = "" if min_win_rate is None or r.passes(min_win_rate) else " FAIL"
  return f"{r.mean:.3f} | {r.mean - r.reference_mean:+.3f} | {r.win_rate:.1%}{flag}"


def to_json(reports: dict[str, ProbeReport]) -> dict:
  return {name: dataclasses.asdict(report) for name, report in reports.items()}


def heldout_metrics(reward: base.Reward, rows: Sequence[tuple[str, str, float]]
                    ) -> dict[str, float]:
  """Spearman ρ, same-source pairwise accuracy and MSE of a reward against labelled rows.

  `rows` are (source, hypothesis, label) triples, e.g. a regression TSV of
  scripts/make_reward_data.py for sources the reward model never saw. The metrics are those
  reward model training reports on its validation rows.
  """
  if reward.needs_reference:
    raise ValueError(f"reward {reward.name!r} needs references; held-out (source, hypothesis, "
                     "label) rows have none")
  if not rows:
    raise ValueError("heldout_metrics: no rows")
  # Imported here: the training module pulls in JAX, which probing a metric reward never needs.
  # pylint: disable-next=g-import-not-at-top
  from rest_jax.rewards import reward_model_training as training
  sources, hypotheses, labels = (list(c) for c in zip(*rows))
  scores = base.score_batch(reward, sources, hypotheses)
  targets = np.asarray(labels, np.float32)
  group_of: dict[str, int] = {}
  groups = np.asarray([group_of.setdefault(s, len(group_of)) for s in sources], np.int64)
  return {"spearman": training.spearman(scores, targets),
          "pairwise_accuracy": training.pairwise_accuracy(scores, targets, groups),
          "mse": float(np.mean(np.square(scores - targets))), "num_rows": len(rows)}
