"""Binary rewards (ReST-EM style): a sample is either correct (1.0) or not (0.0).

ReST-EM (Singh et al. 2023) replaces the learned reward with a verifier and keeps only the
correct samples (threshold 0.5 with the "binary" filter). Two verifiers cover most uses:

  ExactMatchVerifier   the normalised hypothesis equals the normalised reference. Normalisation
                       options: strip (surrounding whitespace), collapse_whitespace (runs of
                       whitespace become one space), case_fold (Unicode `str.casefold`).
  PredicateVerifier    any Python predicate `fn(source, hypothesis, reference) -> bool`, e.g. a
                       unit-test runner or an answer checker; reference is None when the
                       verifier is built with needs_reference=False.

Normalisation of the reward: exactly 0.0 or 1.0.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from rest_jax.rewards import base

_WHITESPACE_RUN = re.compile(r"\s+")


def normalize_text(text: str, *, strip: bool = True, collapse_whitespace: bool = True,
                   case_fold: bool = False) -> str:
  """Applies the exact-match normalisations, in the order collapse, strip, case-fold."""
  if collapse_whitespace:
    text = _WHITESPACE_RUN.sub(" ", text)
  if strip:
    text = text.strip()
  if case_fold:
    text = text.casefold()
  return text


class ExactMatchVerifier(base.Reward):
  """1.0 when the normalised hypothesis equals the normalised reference, else 0.0."""

  name = "exact_match"
  needs_reference = True
  exact = True

  def __init__(self, strip: bool = True, collapse_whitespace: bool = True,
               case_fold: bool = False):
    for field, value in (("strip", strip), ("collapse_whitespace", collapse_whitespace),
                         ("case_fold", case_fold)):
      if not isinstance(value, bool):
        raise ValueError(f"ExactMatchVerifier.{field}={value!r} is invalid: expected True/False")
    self.options = dict(strip=strip, collapse_whitespace=collapse_whitespace,
                        case_fold=case_fold)

  def score(self, sources: Sequence[str], hypotheses: Sequence[str],
            references: Sequence[str] | None = None) -> np.ndarray:
    del sources
    if references is None:
      raise ValueError("reward 'exact_match' is reference-based: pass references")
    normalized = [(normalize_text(h, **self.options), normalize_text(r, **self.options))
                  for h, r in zip(hypotheses, references)]
    return np.asarray([h == r for h, r in normalized], np.float32)


class PredicateVerifier(base.Reward):
  """Wraps `fn(source, hypothesis, reference) -> bool` as a {0, 1} reward.

  The predicate must return a bool (or numpy bool, or the integers 0/1); anything else is an
  error naming the index, because a silently truthy value (say a float 0.3) would be a bug.
  """

  def __init__(self, fn: Callable[[str, str, str | None], bool], name: str = "predicate",
               needs_reference: bool = False):
    if not callable(fn):
      raise ValueError(f"PredicateVerifier.fn={fn!r} is invalid: expected a callable "
                       "fn(source, hypothesis, reference) -> bool")
    self.fn = fn
    self.name = name
    self.needs_reference = needs_reference
    self.exact = True

  def score(self, sources: Sequence[str], hypotheses: Sequence[str],
            references: Sequence[str] | None = None) -> np.ndarray:
    refs = references if references is not None else [None] * len(hypotheses)
    out = np.empty(len(hypotheses), np.float32)
    for i, (source, hypothesis, reference) in enumerate(zip(sources, hypotheses, refs)):
      verdict = self.fn(source, hypothesis, reference)
      if isinstance(verdict, (bool, np.bool_)) or (
          isinstance(verdict, (int, np.integer)) and verdict in (0, 1)):
        out[i] = float(verdict)
      else:
        raise ValueError(f"reward {self.name!r}: predicate returned {verdict!r} "
                         f"({type(verdict).__name__}) at index {i}; expected a bool")
    return out
