"""Reads prompt->completion JSONL files: the format users bring reasoning data in.

One JSON object per line, with a non-empty string "prompt" and exactly one of

  "completion"   a worked solution (what BC trains on), a non-empty string
  "answer"       the final answer only (what Grow samples on and a verifier checks), a non-empty
                 string or a number (written as JSON writes it: 42, 1.5)

e.g. {"prompt": "3+4*2=", "answer": 11} or {"prompt": "...", "completion": "...\\nAnswer: 11"}.
Other keys are ignored (GSM8K-style files carry ids and metadata). The example's target text
is the completion, or the answer as text.

Bad lines follow the TSV reader's rules (rest_jax.data.tsv): by default each is skipped and
counted in a report (`tsv.TsvReport`, one warning per file naming the lines), and `strict=True`
turns the first bad line into a ValueError of the form `file, line N: problem` where the problem
names the field. Files may be plain or .gz, local or remote, like TSV files.
"""

from __future__ import annotations

import json
from typing import Iterator

from absl import logging

from rest_jax.data import tsv

PROMPT, COMPLETION, ANSWER = "prompt", "completion", "answer"
TARGET_FIELDS = (COMPLETION, ANSWER)
EXPECTED = ('expected one JSON object per line with a non-empty string "prompt" and exactly one '
            'of "completion" (non-empty string) or "answer" (non-empty string or number)')


def parse_line(raw: bytes) -> tuple[str | None, str | None, str | None]:
  """(prompt, target text, None) for a good line, or (None, None, problem)."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError:
    return None, None, tsv.INVALID_UTF8
  if not line.strip():
    return None, None, tsv.EMPTY_LINE
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None, None, "invalid JSON"
  if not isinstance(record, dict):
    return None, None, "not a JSON object"
  prompt = record.get(PROMPT)
  if not isinstance(prompt, str) or not prompt.strip():
    return None, None, (f'field "{PROMPT}" is missing' if PROMPT not in record else
                        f'field "{PROMPT}" is not a non-empty string')
  present = [field for field in TARGET_FIELDS if field in record]
  if len(present) != 1:
    return None, None, (f'fields "{COMPLETION}" and "{ANSWER}" are both present'
                        if present else f'field "{COMPLETION}" or "{ANSWER}" is missing')
  field = present[0]
  value = record[field]
  if field == ANSWER and isinstance(value, (int, float)) and not isinstance(value, bool):
    value = json.dumps(value)
  if not isinstance(value, str) or not value.strip():
    allowed = "a non-empty string" + (" or a number" if field == ANSWER else "")
    return None, None, f'field "{field}" is not {allowed}'
  return prompt, value, None


def iter_jsonl_pairs(path: str, *, strict: bool = False,
                     report: tsv.TsvReport | None = None) -> Iterator[tuple[str, str]]:
  """Yields (prompt, target) per good line of one file, filling `report` as it goes."""
  report = report if report is not None else tsv.TsvReport(path)
  skipped_problems: list[str] = []
  with tsv.open_binary(path) as f:
    for line_number, raw in enumerate(f, 1):
      report.num_lines = line_number
      prompt, target, problem = parse_line(raw)
      if problem is not None:
        if strict:
          raise ValueError(f"{path}, line {line_number}: {problem}; {EXPECTED}")
        report.record_skip(problem, line_number)
        if problem not in skipped_problems:
          skipped_problems.append(problem)
        continue
      report.num_pairs += 1
      yield prompt, target
  if report.num_skipped:
    logging.warning("Skipped malformed lines in %s", summary(report, skipped_problems))


def summary(report: tsv.TsvReport, problems: list[str] | None = None) -> str:
  """One line: counts, then each problem with its first line numbers."""
  text = f"{report.path}: {report.num_pairs} examples from {report.num_lines} lines"
  if not report.num_skipped:
    return text
  parts = []
  for problem in problems or list(report.skipped_counts):
    lines = ", ".join(map(str, report.skipped_lines[problem]))
    more = ", ..." if report.skipped_counts[problem] > len(report.skipped_lines[problem]) else ""
    parts.append(f"{problem} x{report.skipped_counts[problem]} (lines {lines}{more})")
  return f"{text}; skipped {report.num_skipped}: " + "; ".join(parts)


def read_jsonl(path: str, *, strict: bool = False) -> tuple[list[tuple[str, str]],
                                                              tsv.TsvReport]:
  """Reads a whole file: the good (prompt, target) pairs and the report."""
  report = tsv.TsvReport(path)
  pairs = list(iter_jsonl_pairs(path, strict=strict, report=report))
  return pairs, report
