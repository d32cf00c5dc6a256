"""Reference-based sentence rewards from sacrebleu: chrF and BLEU, scaled to [0, 1].

These are the cheap, reproducible rewards for ReST on translation: Grow scores N samples per
source against that source's reference. Both use sacrebleu's own sentence scorer, so a reward
of 0.734 is exactly sacrebleu's 73.4 divided by 100.

  chrf   `CHRF(char_order, word_order, beta).sentence_score(hyp, [ref]).score / 100`
         (sacrebleu defaults: chrF with character order 6, word order 0, beta 2; word_order=2
         gives chrF++).
  bleu   `BLEU(tokenize, smooth_method="exp", effective_order=True).sentence_score(...) / 100`,
         i.e. exactly `sacrebleu.sentence_bleu` — sacrebleu recommends effective order for
         sentence BLEU so that short sentences without 4-gram matches do not all score 0.

Speed (one Grow step can produce ~100k samples): the metric object is built once per reward and
reused; identical (hypothesis, reference) pairs, common when sampling many outputs of a short
source, are scored once; `num_workers > 1` splits the unique pairs across processes (spawned,
not forked, because the parent usually runs JAX threads; each worker pays a start-up of about
a second, so the pool is used only from a few thousand unique pairs on). As with any spawned
pool, the program's main module must be import-safe (an `if __name__ == "__main__":` guard),
and the pool only helps when idle cores exist.
"""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any, Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from rest_jax.rewards import base

# Below this many unique pairs a process pool costs more than it saves.
_MIN_PAIRS_FOR_POOL = 2000


@functools.lru_cache(maxsize=32)
def _metric(kind: str, options: tuple[tuple[str, Any], ...]):
  """One cached sacrebleu metric object per (kind, options), in this process."""
  return CHRF(**dict(options)) if kind == "chrf" else BLEU(**dict(options))


def _score_chunk(kind: str, options: tuple[tuple[str, Any], ...],
                 pairs: Sequence[tuple[str, str]]) -> list[float]:
  metric = _metric(kind, options)
  return [metric.sentence_score(hyp, [ref]).score / 100.0 for hyp, ref in pairs]


class SacrebleuSentenceReward(base.Reward):
  """Shared machinery of the sacrebleu rewards: dedup, optional process pool, scaling."""

  needs_reference = True
  _kind = ""

  def __init__(self, options: dict[str, Any], num_workers: int = 0):
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
      raise ValueError(f"{type(self).__name__}.num_workers={num_workers!r} is invalid: expected "
                       "an integer >= 0 (0 or 1 = score in this process)")
    self.options = tuple(sorted(options.items()))
    self.num_workers = num_workers
    _metric(self._kind, self.options)  # Fails now on a bad option, not during Grow.

  def score(self, sources: Sequence[str], hypotheses: Sequence[str],
            references: Sequence[str] | None = None) -> np.ndarray:
    del sources  # Reference-based: the source does not enter the score.
    if references is None:
      raise ValueError(f"reward {self.name!r} is reference-based: pass references")
    unique_index: dict[tuple[str, str], int] = {}
    row_to_unique = np.fromiter(
        (unique_index.setdefault(pair, len(unique_index)) for pair in zip(hypotheses, references)),
        dtype=np.int64, count=len(hypotheses))
    unique_pairs = list(unique_index)
    unique_scores = np.asarray(self._score_unique(unique_pairs), np.float32)
    return np.clip(unique_scores, 0.0, 1.0)[row_to_unique]

  def _score_unique(self, pairs: list[tuple[str, str]]) -> list[float]:
    if self.num_workers <= 1 or len(pairs) < _MIN_PAIRS_FOR_POOL:
      return _score_chunk(self._kind, self.options, pairs)
    num_chunks = self.num_workers * 4
    size = -(-len(pairs) // num_chunks)
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    work = functools.partial(_score_chunk, self._kind, self.options)
    with multiprocessing.get_context("spawn").Pool(self.num_workers) as pool:
      return [score for chunk in pool.map(work, chunks) for score in chunk]


class ChrfReward(SacrebleuSentenceReward):
  """Sentence chrF / 100 (chrF++ with word_order=2)."""

  name = "chrf"
  _kind = "chrf"

  def __init__(self, char_order: int = CHRF.CHAR_ORDER, word_order: int = CHRF.WORD_ORDER,
               beta: int = CHRF.BETA, num_workers: int = 0):
    super().__init__(dict(char_order=char_order, word_order=word_order, beta=beta), num_workers)


class BleuReward(SacrebleuSentenceReward):
  """Sentence BLEU / 100 with exp smoothing and effective order (= sacrebleu.sentence_bleu)."""

  name = "bleu"
  _kind = "bleu"

  def __init__(self, tokenize: str = BLEU.TOKENIZER_DEFAULT, smooth_method: str = "exp",
               lowercase: bool = False, num_workers: int = 0):
    super().__init__(dict(tokenize=tokenize, smooth_method=smooth_method, lowercase=lowercase,
                          effective_order=True), num_workers)
