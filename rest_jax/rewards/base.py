"""The one reward interface of rest_jax, and the checked call every caller goes through.

ReST scores each grown sample once and then filters on fixed thresholds τ ∈ [0, 1] (the paper
picks from 0.0, 0.7, 0.8, 0.9, 0.95, 0.99). That only works if every reward — a sacrebleu
metric, a binary verifier or a learned model — lives on the same [0, 1] scale, so the contract
is strict: `Reward.score` returns one float32 per hypothesis, each in [0, 1] and never NaN.
`score_batch` is the checked wrapper Grow, evaluation and the scripts call: it validates the
inputs before any (possibly expensive) scoring and rejects out-of-contract outputs with an error
that names the reward, the index and the value, so a broken reward never reaches the filters.

How each reward is normalised:
  chrf          sacrebleu sentence chrF / 100
  bleu          sacrebleu sentence BLEU (exp smoothing, effective order) / 100
  exact_match   1.0 if the normalised hypothesis equals the normalised reference, else 0.0
  predicate     1.0 if the user predicate holds, else 0.0
  learned       sigmoid of the reward model's output logit
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np


class Reward(abc.ABC):
  """Scores (source, hypothesis[, reference]) triples with values in [0, 1].

  Subclasses set `name` (the registry name) and `needs_reference`, and implement `score`.
  `score` may assume `score_batch`'s input checks have passed; callers should use
  `score_batch(reward, ...)` rather than `reward.score(...)` directly.
  """

  name: str = "reward"
  needs_reference: bool = False
  # An exact check of the output against the known answer (a verifier): it cannot be pleased
  # without being right, so the reward-hacking check (reference-overlap metrics against a
  # rising reward) does not apply; answers-only references make BLEU/chrF meaningless anyway.
  exact: bool = False

  @abc.abstractmethod
  def score(self, sources: Sequence[str], hypotheses: Sequence[str],
            references: Sequence[str] | None = None) -> np.ndarray:
    """float32 array [len(hypotheses)] of rewards in [0, 1]."""

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r})"


def _check_text_column(reward_name: str, column: str, values, expected_len: int | None) -> int:
  if isinstance(values, (str, bytes)):
    raise ValueError(f"reward {reward_name!r}: {column} must be a sequence of strings, not a "
                     f"single {type(values).__name__}")
  try:
    length = len(values)
  except TypeError:
    raise ValueError(f"reward {reward_name!r}: {column} must be a sequence of strings, got "
                     f"{type(values).__name__}") from None
  if expected_len is not None and length != expected_len:
    raise ValueError(f"reward {reward_name!r}: got {expected_len} hypotheses but {length} "
                     f"{column}; every hypothesis needs exactly one")
  for i, value in enumerate(values):
    if not isinstance(value, str):
      raise ValueError(f"reward {reward_name!r}: {column}[{i}] is {type(value).__name__} "
                       f"({value!r}); expected str")
  return length


def check_inputs(reward: Reward, sources: Sequence[str], hypotheses: Sequence[str],
                 references: Sequence[str] | None) -> None:
  """Raises ValueError for mismatched lengths, non-strings or a missing required reference."""
  name = getattr(reward, "name", type(reward).__name__)
  n = _check_text_column(name, "hypotheses", hypotheses, None)
  _check_text_column(name, "sources", sources, n)
  if references is None:
    if reward.needs_reference:
      raise ValueError(f"reward {name!r} is reference-based: pass references (one per "
                       "hypothesis)")
  else:
    _check_text_column(name, "references", references, n)


def check_scores(reward_name: str, scores, num_expected: int) -> np.ndarray:
  """The scores as float32 [num_expected]; ValueError naming the first bad index and value."""
  array = np.asarray(scores)
  if array.shape != (num_expected,):
    raise ValueError(f"reward {reward_name!r} returned shape {array.shape}; expected "
                     f"({num_expected},), one score per hypothesis")
  if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
          or array.dtype == np.bool_):
    raise ValueError(f"reward {reward_name!r} returned dtype {array.dtype}; expected floats")
  array = array.astype(np.float32)
  bad = np.flatnonzero(~((array >= 0.0) & (array <= 1.0)))  # NaN fails both comparisons.
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"reward {reward_name!r} returned {array[i]!r} at index {i} "
                     f"({bad.size} score(s) in total outside [0, 1] or NaN); rewards must lie "
                     "in [0, 1]")
  return array


def score_batch(reward: Reward, sources: Sequence[str], hypotheses: Sequence[str],
                references: Sequence[str] | None = None) -> np.ndarray:
  """Checked `reward.score`: validates inputs, scores, validates outputs (float32 in [0, 1])."""
  check_inputs(reward, sources, hypotheses, references)
  if not len(hypotheses):
    return np.zeros((0,), np.float32)
  scores = reward.score(list(sources), list(hypotheses),
                        None if references is None else list(references))
  return check_scores(getattr(reward, "name", type(reward).__name__), scores, len(hypotheses))
