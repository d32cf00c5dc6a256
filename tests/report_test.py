"""Tests for rest_jax.report: results log, Table 1 markdown, plots and TensorBoard events."""

import csv
import glob
import json
import logging
import os

import numpy as np
import pytest

from rest_jax import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(grow, improve, reward, split="validation", **extra):
  row = {"run": report.run_name(grow, improve), "grow_step": grow, "improve_step": improve,
         "split": split, "mean_reward": reward, "bleu": reward / 2, "chrf": reward / 1.5,
         "length_ratio": 0.9876, "distinct_1": 0.4, "distinct_2": 0.61234,
         "repetition_rate": 0.0123, "num_grown": 12000, "num_kept": 3400, "threshold": "",
         "loss": "bc"}
  row.update(extra)
  return row


ROWS = [
    _row(1, 1, 77.81, threshold="threshold:tau=0.8"),
    _row(0, 0, 70.9, num_grown=None, num_kept=None),
    _row(1, 0, 71.94),
    _row(0, 0, 69.5, split="test"),
]


def test_markdown_table_orders_steps_and_formats_numbers():
  table = report.markdown_table(ROWS, "validation")
  lines = table.strip().splitlines()
  assert lines[0].startswith("| run | reward | BLEU | chrF | length ratio | distinct-2 | "
                             "repetition |")
  assert len(lines) == 2 + 3  # Header, separator, three validation rows; the test row is left out.
  assert lines[2] == ("| BC (G=0 I=0) | 70.90 | 35.45 | 47.27 | 0.988 | 0.612 | 0.012 | - | - "
                      "| bc |")
  assert lines[3].startswith("| G=1 I=0 | 71.94 | 35.97 |")
  assert lines[3].endswith("| 12,000 / 3,400 | - | bc |")
  assert lines[4].startswith("| G=1 I=1 | 77.81 | 38.91 | 51.87 |")
  assert "| threshold:tau=0.8 |" in lines[4]
  test_lines = report.markdown_table(ROWS, "test").strip().splitlines()
  assert len(test_lines) == 3 and "69.50" in test_lines[2]


def test_results_log_persists_and_replaces_on_resume(tmp_path):
  log = report.ResultsLog(tmp_path)
  for row in ROWS:
    log.record(row)
  # Resume: a fresh log reloads the rows; re-recording a point replaces it.
  resumed = report.ResultsLog(tmp_path)
  assert resumed.rows == log.rows
  resumed.record(_row(1, 0, 72.5, loss="gold", best_of_n={"1": 72.5, "4": np.float32(75.0)}))
  rows = report.ResultsLog(tmp_path).rows
  assert len(rows) == 4
  g1i0 = [r for r in rows if r["run"] == "G1I0" and r["split"] == "validation"]
  assert len(g1i0) == 1 and g1i0[0]["mean_reward"] == 72.5 and g1i0[0]["loss"] == "gold"
  assert g1i0[0]["best_of_n"] == {"1": 72.5, "4": 75.0}
  # Both files hold one row per point (the jsonl is rewritten, not appended to).
  with open(tmp_path / "results.jsonl") as f:
    assert len(f.read().splitlines()) == 4
  with open(tmp_path / "results.csv", newline="") as f:
    csv_rows = list(csv.DictReader(f))
  assert [(r["run"], r["split"]) for r in csv_rows] == [
      ("G1I1", "validation"), ("G0I0", "validation"), ("G1I0", "validation"), ("G0I0", "test")]
  assert csv_rows[2]["mean_reward"] == "72.5"
  assert json.loads(csv_rows[2]["best_of_n"]) == {"1": 72.5, "4": 75.0}


def test_results_log_tolerates_truncated_last_line(tmp_path, caplog):
  log = report.ResultsLog(tmp_path)
  log.record(ROWS[0])
  log.record(ROWS[1])
  with open(tmp_path / "results.jsonl", "a") as f:
    f.write('{"run": "G1I0", "split": "valid')  # Killed mid-write.
  with caplog.at_level(logging.WARNING):
    resumed = report.ResultsLog(tmp_path)
  assert "results.jsonl line 3 is not a valid results row" in caplog.text
  assert [r["run"] for r in resumed.rows] == ["G1I1", "G0I0"]
  resumed.record(ROWS[2])  # The next row must not be glued onto the broken fragment.
  assert [r["run"] for r in report.ResultsLog(tmp_path).rows] == ["G1I1", "G0I0", "G1I0"]


def test_results_log_sets_garbled_lines_aside_and_goes_on(tmp_path, caplog):
  with open(tmp_path / "results.jsonl", "wb") as f:
    f.write(b'{"run": "G0I0", "split": "validation"}\nnot json\n{"run": "G1I0", "split": "test"}'
            b'\n\xff\xfe{"run"\n[1, 2]\n')
  with caplog.at_level(logging.WARNING):
    log = report.ResultsLog(tmp_path)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 3 and all("\n" not in w for w in warnings)
  assert "line 2 is not a valid results row" in warnings[0]
  assert "line 5 is not a valid results row" in warnings[2] and "must be a dict" in warnings[2]
  assert [(r["run"], r["split"]) for r in log.rows] == [("G0I0", "validation"), ("G1I0", "test")]
  with open(tmp_path / "results.jsonl", "rb") as f:  # Repaired: only the good rows remain.
    assert f.read() == b'{"run": "G0I0", "split": "validation"}\n{"run": "G1I0", "split": "test"}\n'
  with open(tmp_path / "results.jsonl.rejected", "rb") as f:  # Nothing is lost.
    assert f.read() == b'not json\n\xff\xfe{"run"\n[1, 2]\n'
  with open(tmp_path / "results.csv", newline="") as f:
    assert len(list(csv.DictReader(f))) == 2


def test_results_log_rejects_bad_rows(tmp_path):
  log = report.ResultsLog(tmp_path / "other")
  with pytest.raises(ValueError, match="non-empty string 'split'"):
    log.record({"run": "G0I0"})
  with pytest.raises(TypeError, match="not JSON-serialisable"):
    log.record({"run": "G0I0", "split": "validation", "bad": object()})
  assert not os.path.exists(tmp_path / "other" / "results.jsonl")


def test_results_log_repairs_duplicates_and_a_stale_csv(tmp_path):
  """Older versions appended a point again when a resumed run re-evaluated it; loading keeps
  the last row of each point and rewrites both files. Every write goes through a rename."""
  lines = [json.dumps(_row(0, 0, 1.0)), json.dumps(_row(1, 0, 2.0)), json.dumps(_row(0, 0, 3.0))]
  with open(tmp_path / "results.jsonl", "w") as f:
    f.write("\n".join(lines))  # No final newline either.
  log = report.ResultsLog(tmp_path)
  assert [(r["run"], r["mean_reward"]) for r in log.rows] == [("G0I0", 3.0), ("G1I0", 2.0)]
  with open(tmp_path / "results.jsonl") as f:
    assert [json.loads(line)["mean_reward"] for line in f] == [3.0, 2.0]
  with open(tmp_path / "results.csv", newline="") as f:
    assert [r["mean_reward"] for r in csv.DictReader(f)] == ["3.0", "2.0"]
  inode = os.stat(tmp_path / "results.jsonl").st_ino
  log.record(_row(1, 1, 4.0))
  assert os.stat(tmp_path / "results.jsonl").st_ino != inode  # Replaced, not appended to.
  assert not glob.glob(str(tmp_path / "*.tmp-*"))
  os.remove(tmp_path / "results.csv")  # Killed between the two renames: the csv catches up.
  report.ResultsLog(tmp_path)
  with open(tmp_path / "results.csv", newline="") as f:
    assert len(list(csv.DictReader(f))) == 3


def test_write_markdown(tmp_path):
  log = report.ResultsLog(tmp_path)
  for row in ROWS:
    log.record(row)
  path = report.write_markdown(tmp_path)
  text = open(path).read()
  assert path == os.path.join(tmp_path, "results.md")
  assert text.index("## Validation") < text.index("| BC (G=0 I=0) | 70.90") < text.index("## Test")
  assert "| BC (G=0 I=0) | 69.50" in text.split("## Test")[1]
  assert "## Reward-hacking check" in text and "No signs of reward hacking" in text
  assert "## Sample translations" not in text  # No samples/ files in this workdir.
  report.write_markdown(tmp_path, rows=ROWS[:3])
  assert "## Test" not in open(path).read()
  # Old rows without a repetition rate still render.
  old = [{k: v for k, v in r.items() if k != "repetition_rate"} for r in ROWS]
  assert "| BC (G=0 I=0) | 70.90 | 35.45 | 47.27 | 0.988 | 0.612 | - |" in report.markdown_table(
      old)


def test_several_test_splits_get_a_table_each(tmp_path):
  rows = [_row(0, 0, 60.0, split="test_software"), _row(0, 0, 70.0), _row(1, 0, 72.0),
          _row(0, 0, 65.0, split="test_dict"), _row(1, 0, 66.0, split="test_dict"),
          _row(1, 0, 61.0, split="test_software")]
  assert report.splits_of(rows) == ["validation", "test_software", "test_dict"]
  text = open(report.write_markdown(tmp_path, rows)).read()
  titles = [line for line in text.splitlines() if line.startswith("## ")]
  assert titles[:3] == ["## Validation", "## Test split `test_software`",
                        "## Test split `test_dict`"]
  dict_table = text.split("## Test split `test_dict`")[1].split("##")[0]
  assert "| BC (G=0 I=0) | 65.00" in dict_table and "| G=1 I=0 | 66.00" in dict_table


def _hacked(grow, improve, reward, chrf, split="validation", **extra):
  return _row(grow, improve, reward, split=split, chrf=chrf, bleu=chrf / 2, **extra)


def test_hacking_warning_fires_when_reward_rises_and_chrf_falls():
  rows = [_hacked(0, 0, 20.0, 14.0), _hacked(1, 0, 23.0, 14.5), _hacked(1, 1, 30.0, 12.9),
          _hacked(0, 0, 20.0, 14.0, split="test"), _hacked(1, 0, 23.0, 14.6, split="test")]
  warnings = report.hacking_warnings(rows)
  assert [(w.run, w.split) for w in warnings] == [("G1I1", "validation")]
  (warning,) = warnings
  assert len(warning.reasons) == 2  # Against BC and against the previous row G1I0.
  assert warning.reasons[0].startswith("vs BC (G=0 I=0): reward 20.00 -> 30.00 (+10.00) while")
  assert "chrF 14.00 -> 12.90 (-1.10)" in warning.reasons[0]
  assert "BLEU 7.00 -> 6.45" in warning.reasons[0]
  assert warning.reasons[1].startswith("vs G=1 I=0: reward 23.00 -> 30.00")
  assert "chrF 14.50 -> 12.90" in warning.reasons[1]
  assert warning.message.startswith("validation G=1 I=1: vs BC")
  section = report.hacking_section(rows)
  assert "- **validation G=1 I=1**: vs BC (G=0 I=0)" in section and "No signs" not in section
  # An exact verifier's run: the check does not apply, whatever BLEU/chrF do.
  section = report.hacking_section(rows, exact_reward="final_answer")
  assert "Not applicable: the reward `final_answer` is an exact verifier" in section
  assert "G=1 I=1" not in section


def test_verifier_rewards_are_exact_and_learned_or_metric_rewards_are_not():
  from rest_jax.rewards import registry  # pylint: disable=g-import-not-at-top
  assert registry.make_reward("final_answer").exact
  assert registry.make_reward("exact_match").exact
  assert registry.reward_from_spec("python:fn=operator:eq").exact
  assert not registry.make_reward("chrf").exact


def test_hacking_warning_silent_when_reward_and_chrf_rise_or_reward_falls():
  both_rise = [_hacked(0, 0, 20.0, 14.0), _hacked(1, 0, 23.0, 14.5), _hacked(1, 1, 30.0, 15.2)]
  assert report.hacking_warnings(both_rise) == []
  assert "No signs of reward hacking" in report.hacking_section(both_rise)
  # chrF falls, but so does the reward: a worse policy, not a hacked reward.
  assert report.hacking_warnings([_hacked(0, 0, 20.0, 14.0), _hacked(1, 0, 18.0, 12.0)]) == []
  # A fall within the tolerance is noise.
  small = report.HACK_METRIC_DROP * 0.8
  assert report.hacking_warnings([_hacked(0, 0, 20.0, 14.0),
                                  _hacked(1, 0, 25.0, 14.0 - small)]) == []


def test_hacking_warning_length_and_repetition():
  flagged = lambda *rows: [w.reasons for w in report.hacking_warnings(rows)]
  bc = _hacked(0, 0, 20.0, 14.0, length_ratio=0.97)
  # Left the [0.9, 1.1] band that BC was inside.
  (reasons,) = flagged(bc, _hacked(1, 0, 22.0, 14.0, length_ratio=0.93),
                       _hacked(1, 1, 24.0, 14.0, length_ratio=0.89))
  assert reasons == ("vs BC (G=0 I=0): reward 20.00 -> 24.00 (+4.00) while length ratio "
                     "0.970 -> 0.890 (outside [0.9, 1.1])",)
  assert flagged(bc, _hacked(1, 0, 22.0, 14.0, length_ratio=1.12))
  # BC outside the band: only a drop larger than HACK_LENGTH_DROP counts.
  short_bc = _hacked(0, 0, 20.0, 14.0, length_ratio=0.88)
  assert flagged(short_bc, _hacked(1, 0, 22.0, 14.0, length_ratio=0.85)) == []
  (reasons,) = flagged(short_bc, _hacked(1, 0, 22.0, 14.0, length_ratio=0.82))
  assert "length ratio 0.880 -> 0.820 (-0.060)" in reasons[0]
  # Repetition rising by more than HACK_REPETITION_RISE.
  (reasons,) = flagged(bc, _hacked(1, 0, 22.0, 14.0, length_ratio=0.97, repetition_rate=0.08))
  assert "repetition 0.012 -> 0.080 (+0.068)" in reasons[0]
  assert flagged(bc, _hacked(1, 0, 22.0, 14.0, length_ratio=0.97, repetition_rate=0.05)) == []
  # Rows from before the repetition metric existed skip that check.
  old_bc = {k: v for k, v in bc.items() if k != "repetition_rate"}
  assert flagged(old_bc, _hacked(1, 0, 22.0, 14.0, length_ratio=0.97, repetition_rate=0.5)) == []


def _write_samples(workdir, run, split, hyps):
  os.makedirs(workdir / "samples", exist_ok=True)
  with open(report.samples_path(workdir, run, split), "w") as f:
    for i, hyp in enumerate(hyps):
      f.write(json.dumps({"source_id": 100 + i, "source": f"quelle {i}",
                          "reference": f"reference {i}", "hypothesis": hyp}) + "\n")


def test_sample_translations_show_bc_next_to_the_final_policy(tmp_path):
  rows = [_row(0, 0, 70.0), _row(0, 0, 60.0, split="test_dict"),
          _row(1, 0, 61.0, split="test_dict"), _row(1, 1, 62.0, split="test_dict")]
  _write_samples(tmp_path, "G0I0", "test_dict", [f"bc hyp {i}" for i in range(21)])
  _write_samples(tmp_path, "G1I1", "test_dict", [f"final hyp {i}" for i in range(21)])
  _write_samples(tmp_path, "G0I0", "validation", ["never shown"])
  assert report.sample_indices(21) == [0, 5, 10, 15, 20]
  assert report.sample_indices(3) == [0, 1, 2] and report.sample_indices(0) == []
  text = open(report.write_markdown(tmp_path, rows)).read()
  section = text.split("## Sample translations")[1]
  assert "### Test split `test_dict`" in section and "never shown" not in section
  assert "2. source (105): quelle 5" in section
  assert "   - reference: reference 5\n   - BC (G=0 I=0): bc hyp 5\n   - G=1 I=1: final hyp 5" \
      in section
  assert section.count("   - reference:") == report.NUM_SAMPLE_TRANSLATIONS


def _assert_png(path):
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def test_plots_are_written(tmp_path):
  _assert_png(report.plot_reward_per_step(ROWS, tmp_path / "plots" / "reward.png"))
  rng = np.random.default_rng(0)
  rewards = {0: rng.beta(5, 3, 500), 1: rng.beta(7, 2, 400)}
  _assert_png(report.plot_reward_histograms(rewards, {0: [0.7, 0.8], 1: [0.8, 0.9]},
                                            tmp_path / "hist.png"))
  _assert_png(report.plot_best_of_n({"BC": [(1, 70.9), (10, 75.0), (200, 78.0)],
                                     "ReST G=2 I=3": [(1, 83.1), (4, 84.0)]},
                                    tmp_path / "bon.png"))
  _assert_png(report.plot_reward_vs_chrf(ROWS, tmp_path / "reward_vs_chrf.png"))
  with pytest.raises(ValueError, match="no rows with split='test2' and both"):
    report.plot_reward_vs_chrf(ROWS, tmp_path / "x.png", split="test2")
  with pytest.raises(ValueError, match="no rows with split='test2'"):
    report.plot_reward_per_step(ROWS, tmp_path / "x.png", split="test2")
  with pytest.raises(ValueError, match=r"Grow steps \[3\]"):
    report.plot_reward_histograms(rewards, {3: [0.5]}, tmp_path / "x.png")


def test_tensorboard_roundtrip(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with report.TensorBoardWriter(tmp_path / "tb") as writer:
    writer.scalar("train/loss", 1.25, step=3)
    writer.write_row(ROWS[0], step=7)
    writer.flush()
  found = {}
  for event_file in glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      for value in event.summary.value:
        assert value.metadata.plugin_data.plugin_name == "scalars"
        found[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  assert found[("train/loss", 3)] == pytest.approx(1.25)
  assert found[("validation/mean_reward", 7)] == pytest.approx(77.81)
  assert found[("validation/num_kept", 7)] == pytest.approx(3400)
  assert ("validation/grow_step", 7) not in found
