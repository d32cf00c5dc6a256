"""Corpus-level translation metrics reported next to the reward.

The reward alone can be gamed (the paper saw online PPO lose ~8 BLEU while its reward rose), so
every evaluation also reports reference-based scores and cheap degeneration signals: length
ratio (padding or truncation), distinct-n (outputs collapsed across the corpus) and the repetition
rate (loops and stutters inside one output, which a learned reward model may over-rate).

BLEU and chrF are sacrebleu's corpus scores (0-100) with sacrebleu defaults: BLEU with the 13a
tokeniser (``tokenize`` selects another, e.g. "zh" for Chinese targets), chrF with character
order 6, word order 0 and beta 2. One reference per hypothesis.
"""

from __future__ import annotations

import re
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


# A token repeats when it belongs to a REPETITION_NGRAM-gram already seen earlier in the same
# hypothesis, or holds a run of RUNAWAY_CHAR_RUN or more identical letters ("trrrrrrr").
REPETITION_NGRAM = 2
RUNAWAY_CHAR_RUN = 4
_RUNAWAY = re.compile(r"([^\W\d_])\1{%d,}" % (RUNAWAY_CHAR_RUN - 1))


def _repeated_tokens(tokens: Sequence[str], n: int) -> int:
  """How many tokens of one hypothesis are repeats (see `repetition_rate`)."""
  repeated = [bool(_RUNAWAY.search(t.casefold())) for t in tokens]
  seen = set()
  for i in range(len(tokens) - n + 1):
    gram = tuple(tokens[i:i + n])
    if gram in seen:
      repeated[i:i + n] = [True] * n
    seen.add(gram)
  return sum(repeated)


def repetition_rate(hyps: Sequence[str], n: int = REPETITION_NGRAM) -> float:
  """Fraction of hypothesis tokens that are repeats, in [0, 1]; 0.0 when there are no tokens.

  Tokens are whitespace tokens. A token counts as a repeat when either
  * it lies inside an occurrence of an n-gram that already started earlier in the same
    hypothesis (n-grams may overlap; the first occurrence is not a repeat), or
  * it contains a run of `RUNAWAY_CHAR_RUN` (4) or more identical letters, case-insensitively
    (runaway characters such as "trrrrrrr"; digits and punctuation runs do not count).
  Counts are summed over all hypotheses (a corpus-level rate; n-grams never cross hypotheses).

  With n=2: "a b c a b" has 2 of 5 tokens repeated (the second "a b"), "a a a a" 3 of 4,
  "the cat and the dog" 0 (a single repeated word is normal language).
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"repetition_rate: n must be an integer >= 1, got {n!r}")
  if isinstance(hyps, str):
    raise ValueError("repetition_rate: hyps must be a list of strings, not a single string")
  repeated, total = 0, 0
  for hyp in hyps:
    tokens = hyp.split()
    repeated += _repeated_tokens(tokens, n)
    total += len(tokens)
  return repeated / total if total else 0.0


def summarize_translations(sources: Sequence[str], hyps: Sequence[str], refs: Sequence[str],
                           rewards: Sequence[float] | np.ndarray,
                           tokenize: str = "13a") -> dict[str, float | int]:
  """All evaluation numbers for one decoded set, in the units the reports use.

  Returns mean_reward (0-100: mean reward in [0, 1] times 100), bleu, chrf, length_ratio,
  distinct_1, distinct_2, repetition_rate (see `repetition_rate`) and num_examples.
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
      "repetition_rate": repetition_rate(hyps),
      "num_examples": len(hyps),
  }
