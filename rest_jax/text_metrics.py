"""Corpus-level translation metrics reported next to the reward.

The reward alone can be gamed (the paper saw online PPO lose ~8 BLEU while its reward rose), so
every evaluation also reports reference-based scores and two cheap degeneration signals:
length ratio (padding or truncation) and distinct-n (repetitive, collapsed outputs).

BLEU and chrF are sacrebleu's corpus scores (0-100) with sacrebleu defaults: BLEU with the 13a
tokeniser (``tokenize`` selects another, e.g. "zh" for Chinese targets), chrF with character
order 6, word order 0 and beta 2. One reference per hypothesis.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF


def _check_pair(hyps: Sequence[str], refs: Sequence[str]) -> None:
  if isinstance(hyps, str) or isinstance(refs, str):
    raise ValueError("hyps and refs must be lists of strings, not a single string")
  if len(hyps) != len(refs):
    raise ValueError(f"hyps and refs must have the same length, got {len(hyps)} hyps and "
                     f"{len(refs)} refs")
  if not hyps:
    raise ValueError("corpus metrics need at least one (hyp, ref) pair, got none")


def _bleu_score(hyps: Sequence[str], refs: Sequence[str], tokenize: str):
  _check_pair(hyps, refs)
  return BLEU(tokenize=tokenize).corpus_score(list(hyps), [list(refs)])


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a") -> float:
  """sacrebleu corpus BLEU, 0-100."""
  return float(_bleu_score(hyps, refs, tokenize).score)


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
  """sacrebleu corpus chrF, 0-100."""
  _check_pair(hyps, refs)
  return float(CHRF().corpus_score(list(hyps), [list(refs)]).score)


def _ratio(sys_len: int, ref_len: int) -> float:
  # sacrebleu's convention: an all-empty reference side gives ratio 0.
  return sys_len / ref_len if ref_len > 0 else 0.0


def length_ratio(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a") -> float:
  """Total hypothesis tokens / total reference tokens, counted by BLEU's tokeniser.

  These are BLEU's sys_len / ref_len, so the ratio is the one behind BLEU's brevity penalty.
  """
  score = _bleu_score(hyps, refs, tokenize)
  return _ratio(score.sys_len, score.ref_len)


def distinct_n(hyps: Sequence[str], n: int) -> float:
  """Unique n-grams / total n-grams over all hypotheses (whitespace tokens), in [0, 1].

  N-grams do not cross hypothesis boundaries; hypotheses shorter than n contribute none. Returns
  0.0 when there are no n-grams at all.
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"distinct_n: n must be an integer >= 1, got {n!r}")
  if isinstance(hyps, str):
    raise ValueError("distinct_n: hyps must be a list of strings, not a single string")
  unique, total = set(), 0
  for hyp in hyps:
    tokens = hyp.split()
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    unique.update(grams)
    total += len(grams)
  return len(unique) / total if total else 0.0


def summarize_translations(sources: Sequence[str], hyps: Sequence[str], refs: Sequence[str],
                           rewards: Sequence[float] | np.ndarray,
                           tokenize: str = "13a") -> dict[str, float | int]:
  """All evaluation numbers for one decoded set, in the units the reports use.

  Returns mean_reward (0-100: mean reward in [0, 1] times 100), bleu, chrf, length_ratio,
  distinct_1, distinct_2 and num_examples.
  """
  rewards = np.asarray(rewards, dtype=np.float64)
  lengths = {"sources": len(sources), "hyps": len(hyps), "refs": len(refs),
             "rewards": rewards.shape[0] if rewards.ndim == 1 else -1}
  if rewards.ndim != 1 or len(set(lengths.values())) != 1:
    raise ValueError(f"summarize_translations: sources, hyps, refs and rewards must be 1-D "
                     f"with one entry per example, got lengths {lengths} "
                     f"(rewards shape {rewards.shape})")
  if not np.all(np.isfinite(rewards)):
    raise ValueError("summarize_translations: rewards contain NaN or inf")
  bleu = _bleu_score(hyps, refs, tokenize)
  return {
      "mean_reward": float(rewards.mean() * 100.0),
      "bleu": float(bleu.score),
      "chrf": corpus_chrf(hyps, refs),
      "length_ratio": _ratio(bleu.sys_len, bleu.ref_len),
      "distinct_1": distinct_n(hyps, 1),
      "distinct_2": distinct_n(hyps, 2),
      "num_examples": len(hyps),
  }
