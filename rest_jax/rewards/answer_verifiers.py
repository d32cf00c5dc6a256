"""Verifiers for reasoning tasks: check the final answer of a worked solution, or call user code.

ReST-EM keeps a sampled solution when its final answer is right, whatever the steps before it
say. Two rewards, both exactly 0.0 or 1.0:

  final_answer   extracts the final answer from the hypothesis with a regular expression (the
                 *last* match by default; group 1 if the pattern has a group, else the whole
                 match) and compares it with the reference's answer: the same pattern applied
                 to the reference, or — when the reference does not match, e.g. an answers-only
                 JSONL line {"prompt", "answer": 72} — the whole stripped reference.
                 compare='numeric' (default) compares numbers exactly as fractions ("72",
                 "72.0", "1,000", "$5", "3/4" are numbers) and falls back to comparing the
                 normalised text when either side is not a number; compare='exact' compares
                 the normalised text (whitespace collapsed, stripped; case_fold optional).
                 A hypothesis without a match scores 0.
  python         any function given by import path, `fn='package.module:function'` (or
                 'package.module.function'), called as fn(source, hypothesis, reference) and
                 returning a bool; wrapped in `PredicateVerifier`.

From gin, patterns with commas go in `rest_loop.run.reward_options` (the spec string splits
options at commas): reward_options = {'pattern': r'####\\s*(\\S+)'}.
"""

from __future__ import annotations

import fractions
import importlib
import re
from typing import Callable, Sequence

import numpy as np

from rest_jax.rewards import base, verifiers

DEFAULT_PATTERN = r"Answer:\s*([^\n]*)"
COMPARE_MODES = ("numeric", "exact")
OCCURRENCES = ("last", "first")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?")


def parse_number(text: str) -> fractions.Fraction | None:
  """The exact value of a number written as text, or None; tolerates $, commas, a final '.'."""
  cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".").strip()
  if not _NUMBER.fullmatch(cleaned):
    return None
  try:
    return fractions.Fraction(cleaned)
  except (ValueError, ZeroDivisionError):
    return None


class FinalAnswerVerifier(base.Reward):
  """1.0 when the hypothesis's final answer equals the reference's (module docstring)."""

  name = "final_answer"
  needs_reference = True
  exact = True

  def __init__(self, pattern: str = DEFAULT_PATTERN, compare: str = "numeric",
               occurrence: str = "last", case_fold: bool = False):
    if not isinstance(pattern, str) or not pattern:
      raise ValueError(f"reward 'final_answer': pattern={pattern!r} is invalid: expected a "
                       "non-empty regular expression, e.g. 'Answer:\\s*(\\S+)'")
    try:
      self.regex = re.compile(pattern)
    except re.error as e:
      raise ValueError(f"reward 'final_answer': pattern={pattern!r} is not a valid regular "
                       f"expression ({e})") from None
    if self.regex.groups > 1:
      raise ValueError(f"reward 'final_answer': pattern={pattern!r} has {self.regex.groups} "
                       "groups; allowed: 0 (the whole match is the answer) or 1")
    if compare not in COMPARE_MODES:
      raise ValueError(f"reward 'final_answer': compare={compare!r} is invalid; allowed: "
                       f"{list(COMPARE_MODES)}")
    if occurrence not in OCCURRENCES:
      raise ValueError(f"reward 'final_answer': occurrence={occurrence!r} is invalid; allowed: "
                       f"{list(OCCURRENCES)}")
    if not isinstance(case_fold, bool):
      raise ValueError(f"reward 'final_answer': case_fold={case_fold!r} is invalid: expected "
                       "True/False")
    self.pattern, self.compare, self.occurrence, self.case_fold = (
        pattern, compare, occurrence, case_fold)

  def extract(self, text: str) -> str | None:
    """The answer the pattern finds in `text` (stripped), or None."""
    matches = list(self.regex.finditer(text))
    if not matches:
      return None
    match = matches[-1] if self.occurrence == "last" else matches[0]
    return (match.group(1) if self.regex.groups else match.group(0) or "").strip()

  def reference_answer(self, reference: str) -> str:
    found = self.extract(reference)
    return found if found is not None else reference.strip()

  def same(self, answer: str, expected: str) -> bool:
    if self.compare == "numeric":
      a, b = parse_number(answer), parse_number(expected)
      if a is not None and b is not None:
        return a == b
    normalize = lambda t: verifiers.normalize_text(t, case_fold=self.case_fold)
    return normalize(answer) == normalize(expected)

  def score(self, sources: Sequence[str], hypotheses: Sequence[str],
            references: Sequence[str] | None = None) -> np.ndarray:
    del sources
    if references is None:
      raise ValueError("reward 'final_answer' is reference-based: pass references")
    out = np.zeros(len(hypotheses), np.float32)
    for i, (hypothesis, reference) in enumerate(zip(hypotheses, references)):
      answer = self.extract(hypothesis)
      out[i] = float(answer is not None and self.same(answer, self.reference_answer(reference)))
    return out


def load_function(path: str) -> Callable:
  """The callable at 'package.module:function' or 'package.module.function'."""
  if not isinstance(path, str) or not re.fullmatch(r"[\w.]+[:.]\w+", path or ""):
    raise ValueError(f"reward 'python': fn={path!r} is invalid: expected an import path "
                     "'package.module:function' (or 'package.module.function')")
  module_name, _, attribute = path.rpartition(":") if ":" in path else path.rpartition(".")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"reward 'python': fn={path!r}: cannot import module {module_name!r} "
                     f"({e})") from None
  fn = getattr(module, attribute, None)
  if not callable(fn):
    raise ValueError(f"reward 'python': fn={path!r}: module {module_name!r} has no callable "
                     f"{attribute!r}")
  return fn


def python_verifier(fn: str, needs_reference: bool = True) -> verifiers.PredicateVerifier:
  """The `python` reward: the predicate at import path `fn` as a {0, 1} verifier."""
  if not isinstance(needs_reference, bool):
    raise ValueError(f"reward 'python': needs_reference={needs_reference!r} is invalid: "
                     "expected True/False")
  return verifiers.PredicateVerifier(load_function(fn), name=f"python:{fn}",
                                     needs_reference=needs_reference)
