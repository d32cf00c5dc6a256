"""Tests for rest_jax.data.tsv: good lines pass through, bad lines are counted or raise."""

import gzip
import logging

import pytest

from rest_jax.data import tsv

# One good line, then one line per problem, then a good line with CRLF and padding spaces.
LINES = [
    b"Guten Morgen.\tGood morning.\n",               # 1 good
    b"kein Tabulator hier\n",                        # 2 missing tab
    b"eins\tzwei\tdrei\n",                           # 3 more than one tab
    b"\tnur Referenz\n",                             # 4 empty source
    b"nur Quelle\t   \n",                            # 5 empty reference
    b"kaputt \xff\xfe\tbroken\n",                    # 6 invalid UTF-8
    b"\n",                                           # 7 empty line
    b"  Danke sch\xc3\xb6n.  \t Thank you. \r\n",    # 8 good (CRLF, spaces stripped)
]
GOOD = [("Guten Morgen.", "Good morning."), ("Danke schön.", "Thank you.")]
EXPECTED_LINES = {
    tsv.MISSING_TAB: [2], tsv.EXTRA_TAB: [3], tsv.EMPTY_SOURCE: [4],
    tsv.EMPTY_REFERENCE: [5], tsv.INVALID_UTF8: [6], tsv.EMPTY_LINE: [7],
}


def write(path, lines, compress=False):
  opener = gzip.open if compress else open
  with opener(path, "wb") as f:
    f.write(b"".join(lines))
  return str(path)


@pytest.mark.parametrize("compress", [False, True])
def test_bad_lines_are_skipped_and_reported(tmp_path, compress):
  path = write(tmp_path / ("x.tsv.gz" if compress else "x.tsv"), LINES, compress)
  pairs, report = tsv.read_tsv(path)
  assert pairs == GOOD
  assert report.num_lines == 8
  assert report.num_pairs == 2
  assert report.num_skipped == 6
  assert report.skipped_lines == EXPECTED_LINES
  assert all(report.skipped_counts[problem] == 1 for problem in EXPECTED_LINES)
  summary = report.summary()
  assert "2 pairs from 8 lines" in summary
  assert "missing tab x1 (lines 2)" in summary
  assert "invalid UTF-8 x1 (lines 6)" in summary


def test_skipped_lines_log_one_warning(tmp_path, caplog):
  path = write(tmp_path / "x.tsv", LINES)
  with caplog.at_level(logging.WARNING):
    tsv.read_tsv(path)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert path in warnings[0] and "skipped 6" in warnings[0]


def test_clean_file_logs_nothing(tmp_path, caplog):
  path = write(tmp_path / "x.tsv", [LINES[0], LINES[7]])
  with caplog.at_level(logging.WARNING):
    pairs, report = tsv.read_tsv(path)
  assert pairs == GOOD and report.num_skipped == 0
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert report.summary().endswith("2 pairs from 2 lines")


@pytest.mark.parametrize("bad_index, problem", [
    (1, "missing tab"), (2, "more than one tab"), (3, "empty source"),
    (4, "empty reference"), (5, "invalid UTF-8"), (6, "empty line")])
def test_strict_names_file_line_and_problem(tmp_path, bad_index, problem):
  path = write(tmp_path / "x.tsv", [LINES[0], LINES[bad_index]])
  with pytest.raises(ValueError, match=rf"x\.tsv, line 2: {problem}"):
    tsv.read_tsv(path, strict=True)


def test_strict_accepts_clean_gz(tmp_path):
  path = write(tmp_path / "x.tsv.gz", [LINES[0], LINES[7]], compress=True)
  assert tsv.read_tsv(path, strict=True)[0] == GOOD


def test_line_numbers_are_capped_but_counts_exact(tmp_path):
  bad = [b"no tab\n"] * (tsv.MAX_LINE_NUMBERS_KEPT + 5)
  _, report = tsv.read_tsv(write(tmp_path / "x.tsv", bad))
  assert report.skipped_counts[tsv.MISSING_TAB] == tsv.MAX_LINE_NUMBERS_KEPT + 5
  assert report.skipped_lines[tsv.MISSING_TAB] == list(range(1, tsv.MAX_LINE_NUMBERS_KEPT + 1))
  assert report.summary().endswith(", ...)")


def test_pattern_reads_files_in_sorted_order(tmp_path):
  write(tmp_path / "b.tsv", [b"B.\tB.\n"])
  write(tmp_path / "a.tsv.gz", [b"A.\tA.\n"], compress=True)
  reports = []
  pairs = list(tsv.iter_pattern_pairs(str(tmp_path / "*.tsv*"), reports=reports))
  assert pairs == [("A.", "A."), ("B.", "B.")]
  assert [r.num_pairs for r in reports] == [1, 1]


def test_missing_pattern_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing-here"):
    tsv.expand_pattern(str(tmp_path / "nothing-here*.tsv"))
