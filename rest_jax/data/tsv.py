"""Reads `source<TAB>reference` files, the exchange format of every rest_jax text corpus.

User corpora are rarely clean: a stray tab inside a sentence, an empty translation, a line cut in
the middle of a UTF-8 character. One bad line should neither stop a week-long ReST run nor slip
silently into training, so by default bad lines are skipped and *reported* (a `TsvReport` with
counts and line numbers, plus one logged warning per file); `strict=True` turns the first bad
line into a `ValueError` naming the file, the line number and the problem.

Files may be plain or gzip-compressed (`.gz`), local or on any filesystem `tf.io.gfile`
understands (`gs://...`). Line numbers are 1-based; `\\r\\n` endings are accepted; each side is
stripped of surrounding whitespace but otherwise kept as written.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import gzip
from typing import IO, Iterator

from absl import logging

# Problems a line can have, in the order they are checked.
INVALID_UTF8 = "invalid UTF-8"
EMPTY_LINE = "empty line"
MISSING_TAB = "missing tab"
EXTRA_TAB = "more than one tab"
EMPTY_SOURCE = "empty source"
EMPTY_REFERENCE = "empty reference"
PROBLEMS = (INVALID_UTF8, EMPTY_LINE, MISSING_TAB, EXTRA_TAB, EMPTY_SOURCE, EMPTY_REFERENCE)

# Line numbers kept per problem; counts are always exact.
MAX_LINE_NUMBERS_KEPT = 100


@dataclasses.dataclass
class TsvReport:
  """What reading one file found: good pairs and skipped lines by problem."""

  path: str
  num_lines: int = 0
  num_pairs: int = 0
  skipped_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped_lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped_counts.values())

  def record_skip(self, problem: str, line_number: int) -> None:
    self.skipped_counts[problem] += 1
    kept = self.skipped_lines.setdefault(problem, [])
    if len(kept) < MAX_LINE_NUMBERS_KEPT:
      kept.append(line_number)

  def summary(self) -> str:
    """One line, e.g. 'x.tsv: 98 pairs from 100 lines; skipped 2: missing tab x2 (lines 3, 9)'."""
    text = f"{self.path}: {self.num_pairs} pairs from {self.num_lines} lines"
    if not self.num_skipped:
      return text
    parts = []
    for problem in PROBLEMS:
      if self.skipped_counts[problem]:
        lines = ", ".join(map(str, self.skipped_lines[problem]))
        more = ", ..." if self.skipped_counts[problem] > len(self.skipped_lines[problem]) else ""
        parts.append(f"{problem} x{self.skipped_counts[problem]} (lines {lines}{more})")
    return f"{text}; skipped {self.num_skipped}: " + "; ".join(parts)


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
  """Opens a plain or .gz file for reading bytes, locally or through tf.io.gfile."""
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only remote paths need it)
    raw = tf.io.gfile.GFile(path, "rb")
  else:
    raw = open(path, "rb")  # pylint: disable=consider-using-with
  with raw:
    if path.endswith(".gz"):
      with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        yield unzipped
    else:
      yield raw


def expand_pattern(pattern: str) -> list[str]:
  """Sorted files matching a glob pattern (local or remote); FileNotFoundError if none."""
  if "://" in pattern:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    paths = tf.io.gfile.glob(pattern)
  else:
    paths = glob.glob(pattern)
  if not paths:
    raise FileNotFoundError(f"no file matches {pattern!r}")
  return sorted(paths)


def parse_line(raw: bytes) -> tuple[str | None, str | None, str | None]:
  """Returns (source, reference, None) for a good line or (None, None, problem)."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError:
    return None, None, INVALID_UTF8
  line = line.rstrip("\n").rstrip("\r")
  if not line.strip():
    return None, None, EMPTY_LINE
  fields = line.split("\t")
  if len(fields) == 1:
    return None, None, MISSING_TAB
  if len(fields) > 2:
    return None, None, EXTRA_TAB
  source, reference = fields[0].strip(), fields[1].strip()
  if not source:
    return None, None, EMPTY_SOURCE
  if not reference:
    return None, None, EMPTY_REFERENCE
  return source, reference, None


def iter_tsv_pairs(path: str, *, strict: bool = False,
                   report: TsvReport | None = None) -> Iterator[tuple[str, str]]:
  """Yields (source, reference) per good line of one file, filling `report` as it goes.

  The warning for skipped lines is logged when the file has been read to the end.
  """
  report = report if report is not None else TsvReport(path)
  with open_binary(path) as f:
    for line_number, raw in enumerate(f, 1):
      report.num_lines = line_number
      source, reference, problem = parse_line(raw)
      if problem is not None:
        if strict:
          raise ValueError(f"{path}, line {line_number}: {problem}; expected "
                           "'source<TAB>reference' with both sides non-empty UTF-8 text")
        report.record_skip(problem, line_number)
        continue
      report.num_pairs += 1
      yield source, reference
  if report.num_skipped:
    logging.warning("Skipped malformed lines in %s", report.summary())


def read_tsv(path: str, *, strict: bool = False) -> tuple[list[tuple[str, str]], TsvReport]:
  """Reads a whole file: the good (source, reference) pairs and the report."""
  report = TsvReport(path)
  pairs = list(iter_tsv_pairs(path, strict=strict, report=report))
  return pairs, report


def iter_pattern_pairs(pattern: str, *, strict: bool = False,
                       reports: list[TsvReport] | None = None) -> Iterator[tuple[str, str]]:
  """Yields the pairs of every file matching `pattern`, files in sorted order."""
  for path in expand_pattern(pattern):
    report = TsvReport(path)
    if reports is not None:
      reports.append(report)
    yield from iter_tsv_pairs(path, strict=strict, report=report)
