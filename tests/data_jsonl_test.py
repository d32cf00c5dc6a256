"""Prompt->completion JSONL files: parsing, per-line reports and errors, the seqio task."""

import gzip
import json

import pytest

from rest_jax.data import jsonl
from rest_jax.data import pipeline
from rest_jax.data import reasoning_tasks

GOOD = [{"prompt": "2+3=", "completion": "2+3=5\nAnswer: 5"},
        {"prompt": "7-4=", "answer": 3, "id": "q2"},
        {"prompt": "half of 3?", "answer": 1.5},
        {"prompt": "Name it.", "answer": "Paris"}]


def _write(path, lines):
  text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
  if str(path).endswith(".gz"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(text)
  else:
    path.write_text(text, encoding="utf-8")
  return str(path)


BAD = [
    ("", "empty line"),
    ("{not json", "invalid JSON"),
    ("[1, 2]", "not a JSON object"),
    ({"answer": 3}, 'field "prompt" is missing'),
    ({"prompt": " ", "answer": 3}, 'field "prompt" is not a non-empty string'),
    ({"prompt": "q"}, 'field "completion" or "answer" is missing'),
    ({"prompt": "q", "answer": 1, "completion": "1"}, 'fields "completion" and "answer" are both'),
    ({"prompt": "q", "answer": True}, 'field "answer" is not a non-empty string or a number'),
    ({"prompt": "q", "completion": 5}, 'field "completion" is not a non-empty string'),
]


def test_good_lines():
  pairs = [jsonl.parse_line(json.dumps(x).encode()) for x in GOOD]
  assert pairs == [("2+3=", "2+3=5\nAnswer: 5", None), ("7-4=", "3", None),
                   ("half of 3?", "1.5", None), ("Name it.", "Paris", None)]


@pytest.mark.parametrize("line,problem", BAD)
def test_each_bad_line_is_skipped_and_reported_or_raises(tmp_path, line, problem):
  path = _write(tmp_path / "data.jsonl", [GOOD[1], line, GOOD[0]])
  pairs, report = jsonl.read_jsonl(path)
  assert [p for p, _ in pairs] == ["7-4=", "2+3="]
  assert report.num_skipped == 1 and report.skipped_lines == {
      next(iter(report.skipped_counts)): [2]}
  assert problem in next(iter(report.skipped_counts))
  with pytest.raises(ValueError, match=f"{path}, line 2: {problem}"):
    jsonl.read_jsonl(path, strict=True)


def test_invalid_utf8_and_gzip(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_bytes(json.dumps(GOOD[1]).encode() + b"\n\xff\xfe\n")
  _, report = jsonl.read_jsonl(str(path))
  assert report.skipped_lines == {"invalid UTF-8": [2]}
  assert "examples from 2 lines; skipped 1: invalid UTF-8 x1 (lines 2)" in jsonl.summary(report)
  pairs, _ = jsonl.read_jsonl(_write(tmp_path / "g.jsonl.gz", GOOD))
  assert len(pairs) == 4


def test_seqio_jsonl_task(tmp_path):
  train = _write(tmp_path / "train.jsonl", [GOOD[0], "oops", GOOD[1]])
  validation = _write(tmp_path / "validation.jsonl", GOOD[2:])
  reasoning_tasks.register_jsonl_task("jsonl_test", {"train": train, "validation": validation},
                                      overwrite=True)
  examples = pipeline.load_examples("jsonl_test", "train")
  assert [(e.source_id, e.source, e.reference) for e in examples] == [
      (0, "2+3=", "2+3=5\nAnswer: 5"), (1, "7-4=", "3")]
  vocab = pipeline.get_task_vocabulary("jsonl_test")
  assert vocab.decode(examples[1].inputs[:-1].tolist()) == "7-4="
  reasoning_tasks.register_jsonl_task("jsonl_strict_test", {"train": train}, strict=True,
                                      overwrite=True)
  with pytest.raises(ValueError, match=r"'jsonl_strict_test' split 'train': .*train.jsonl, "
                                       r"line 2: invalid JSON"):
    pipeline.load_examples("jsonl_strict_test", "train")
  reasoning_tasks.register_jsonl_task("jsonl_missing_test", {"train": str(tmp_path / "no*.jsonl")},
                                      overwrite=True)
  with pytest.raises(FileNotFoundError, match=r"split 'train': no file matches"):
    pipeline.load_examples("jsonl_missing_test", "train")


def test_bad_registration_arguments():
  with pytest.raises(ValueError, match="must map split names to non-empty file patterns"):
    reasoning_tasks.register_jsonl_task("jsonl_bad", {"train": ""})
  with pytest.raises(ValueError, match="strict='yes' is invalid"):
    reasoning_tasks.register_jsonl_task("jsonl_bad", {"train": "x.jsonl"}, strict="yes")
