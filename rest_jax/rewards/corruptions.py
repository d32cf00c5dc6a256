"""Broken versions of a reference translation: the outputs a hacked policy drifts towards.

A reference-free reward model learns only what its training data shows it. Trained on a weak
policy's samples labelled with chrF, the first shipped model rated a reference said twice far
above the reference, and ReST then raised that reward while the translations degenerated into
repetitions and runaway characters ("The ventrrrrrry."). This module names those failure
shapes once, so that the same functions make negative training rows
(scripts/make_reward_data.py) and the probes that check a trained reward
(`rest_jax.rewards.probes`, scripts/probe_reward_model.py):

  repeat_ngram      a word n-gram (1-3 words) repeated so it occurs 3-5 times in a row
  repeat_sentence   the whole reference twice
  truncate          the first 30-70% of the words (a strict prefix; needs >= 2 words)
  copy_source       the untranslated source
  shuffle_words     the same words in another order (needs two different words)
  other_reference   the reference of another source (from `pool`)
  runaway_chars     one letter repeated 8-16 times inside or at the end of a word ("trrrrrry")
  near_empty        a single short word that is not the reference

Every corruption is `fn(source, reference, rng, pool) -> str | None`: deterministic given the
`random.Random` state, never equal to the reference, and None where it does not apply (a
one-word reference has no truncation). `random_word_edits` is the older, milder family (0..k
word edits) used by `--policy=random_perturbation`.

Words are whitespace-separated tokens; outputs are joined with single spaces.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable, Optional, Sequence

Corruption = Callable[[str, str, random.Random, Sequence[str]], Optional[str]]

NEAR_EMPTY_WORDS = (".", "a", "I", "It", "The", "the", "Yes", "No", "OK")
RUNAWAY_REPEATS = (8, 16)  # Total copies of the letter, inclusive range.
NGRAM_OCCURRENCES = (3, 5)
TRUNCATE_SHARE = (0.3, 0.7)


def source_rng(seed: int, stream: str, index: int) -> random.Random:
  """A `random.Random` for one (seed, purpose, example) triple, stable across runs and Pythons.

  Deriving each example's generator from its index keeps one part of a data set unchanged when
  another part (more policies, other corruption kinds) is added.
  """
  digest = hashlib.sha256(f"{seed}\t{stream}\t{index}".encode("utf-8")).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def _different(candidate: str, reference: str) -> str | None:
  return candidate if candidate != reference else None


def repeat_ngram(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del source, pool
  words = reference.split()
  if not words:
    return None
  n = rng.randint(1, min(3, len(words)))
  start = rng.randrange(len(words) - n + 1)
  occurrences = rng.randint(*NGRAM_OCCURRENCES)
  gram = words[start:start + n]
  return " ".join(words[:start] + gram * occurrences + words[start + n:])


def repeat_sentence(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del source, rng, pool
  text = " ".join(reference.split())
  return f"{text} {text}" if text else None


def truncate(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del source, pool
  words = reference.split()
  if len(words) < 2:
    return None
  keep = round(len(words) * rng.uniform(*TRUNCATE_SHARE))
  return " ".join(words[:min(max(keep, 1), len(words) - 1)])


def copy_source(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del rng, pool
  text = " ".join(source.split())
  return _different(text, " ".join(reference.split())) if text else None


def shuffle_words(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del source, pool
  words = reference.split()
  if len(set(words)) < 2:
    return None
  order = list(words)
  while order == words:  # Two different words: some other order exists.
    rng.shuffle(order)
  return " ".join(order)


def other_reference(source: str, reference: str, rng: random.Random,
                    pool: Sequence[str] = ()) -> str | None:
  del source
  mine = " ".join(reference.split())
  for _ in range(10 if pool else 0):  # A pool of copies of `reference` gives up.
    other = " ".join(pool[rng.randrange(len(pool))].split())
    if other and other != mine:
      return other
  return None


def runaway_chars(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del source, pool
  words = reference.split()
  candidates = [i for i, w in enumerate(words) if any(c.isalpha() for c in w)]
  if not candidates:
    return None
  i = rng.choice(candidates)
  letters = [k for k, c in enumerate(words[i]) if c.isalpha()]
  at_end = rng.random() < 0.5 or len(letters) < 2
  k = letters[-1] if at_end else rng.choice(letters[:-1])
  word = words[i]
  words[i] = word[:k] + word[k] * rng.randint(*RUNAWAY_REPEATS) + word[k + 1:]
  return " ".join(words)


def near_empty(source: str, reference: str, rng: random.Random, pool=()) -> str | None:
  del source, pool
  mine = " ".join(reference.split())
  choices = [w for w in NEAR_EMPTY_WORDS if w != mine]
  return rng.choice(choices)


CORRUPTIONS: dict[str, Corruption] = {
    "repeat_ngram": repeat_ngram,
    "repeat_sentence": repeat_sentence,
    "truncate": truncate,
    "copy_source": copy_source,
    "shuffle_words": shuffle_words,
    "other_reference": other_reference,
    "runaway_chars": runaway_chars,
    "near_empty": near_empty,
}
KINDS = tuple(CORRUPTIONS)


def parse_kinds(text: str | Sequence[str]) -> tuple[str, ...]:
  """'a,b' (or a list) -> validated kinds; ValueError listing the valid kinds."""
  kinds = [k.strip() for k in text.split(",")] if isinstance(text, str) else list(text)
  kinds = [k for k in kinds if k]
  unknown = [k for k in kinds if k not in CORRUPTIONS]
  if unknown or not kinds:
    raise ValueError(f"corruption kinds {unknown or kinds!r} are invalid: expected a non-empty "
                     f"comma-separated list of {list(KINDS)}")
  return tuple(dict.fromkeys(kinds))


def corrupt(kind: str, source: str, reference: str, rng: random.Random,
            pool: Sequence[str] = ()) -> str | None:
  """The `kind` corruption of `reference` (None where it does not apply)."""
  if kind not in CORRUPTIONS:
    raise ValueError(f"unknown corruption kind {kind!r}; valid kinds: {list(KINDS)}")
  return CORRUPTIONS[kind](source, reference, rng, pool)


def random_corruption(kinds: Sequence[str], source: str, reference: str, rng: random.Random,
                      pool: Sequence[str] = ()) -> tuple[str, str] | None:
  """(kind, text) for a kind drawn uniformly from those of `kinds` that apply; None if none."""
  remaining = list(kinds)
  while remaining:
    kind = remaining.pop(rng.randrange(len(remaining)))
    text = corrupt(kind, source, reference, rng, pool)
    if text is not None:
      return kind, text
  return None


# ----------------------------------------------------------------------- random word edits
WORD_EDITS = ("drop", "swap", "replace", "repeat", "truncate")


def random_word_edits(words: list[str], edits: int, word_pool: Sequence[str],
                      rng: random.Random) -> list[str]:
  """Applies `edits` random word edits (truncation at most once); never returns no words.

  The edits: drop a word, swap two neighbours, replace a word with one from `word_pool`, repeat
  a word, truncate the tail. Labelled with a metric they cover the whole [0, 1] range.
  """
  words, truncated = list(words), False
  for _ in range(edits):
    choices = [e for e in WORD_EDITS if not (e == "truncate" and (truncated or len(words) < 2))
               and not (e in ("drop", "swap") and len(words) < 2)]
    edit = rng.choice(choices)
    i = rng.randrange(len(words))
    if edit == "drop":
      del words[i]
    elif edit == "swap":
      j = i + 1 if i + 1 < len(words) else i - 1
      words[i], words[j] = words[j], words[i]
    elif edit == "replace":
      words[i] = rng.choice(word_pool)
    elif edit == "repeat":
      words.insert(i, words[i])
    else:
      words, truncated = words[:rng.randrange(1, len(words))], True
  return words
