"""Reward probes: win rates per corruption kind, the --min_win_rate check, held-out metrics.

Fake rewards make the expected outcome certain: a reward that prefers long outputs must fail
the repetition probes, chrF against the reference must pass every probe, a constant reward
wins nothing (ties are losses). One subprocess run shows the shipped Ding reward model failing
the check with a non-zero exit status. The last test holds the shipped `de_en` reward model to
the bar it was built for; it is skipped until that model exists.
"""

import gzip
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rest_jax.rewards import base, corruptions, probes, registry
from reward_data_test import PAIRS, load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DE_EN_DIR = os.path.join(REPO, "rest_jax", "data", "de_en")
DING_VALIDATION = os.path.join(REPO, "rest_jax", "data", "ding", "validation.tsv.gz")
probe_script = load_script("probe_reward_model")


class LongerIsBetter(base.Reward):
  """Reference-free: the longer the output, the higher the reward (a classic hackable reward)."""
  name = "longer_is_better"
  needs_reference = False

  def score(self, sources, hypotheses, references=None):
    return np.asarray([min(1.0, len(h) / 500) for h in hypotheses], np.float32)


class Constant(base.Reward):
  name = "constant_half"
  needs_reference = False

  def score(self, sources, hypotheses, references=None):
    return np.full(len(hypotheses), 0.5, np.float32)


@pytest.fixture(autouse=True, scope="module")
def _fake_rewards_registered():
  """The fake rewards exist by name only while this module's tests run.

  Registering them at import time would leak into every other test module that the same
  worker collects (the registry's list of names is part of several error messages).
  """
  with pytest.MonkeyPatch.context() as patch:
    for name, factory in (("longer_is_better", LongerIsBetter), ("constant_half", Constant)):
      patch.setitem(registry._FACTORIES, name, factory)  # pylint: disable=protected-access
    yield

SOURCES = [s for s, _ in PAIRS]
REFERENCES = [r for _, r in PAIRS]


def by_kind(report):
  return {r.kind: r for r in report.kinds}


def test_a_reward_that_prefers_long_outputs_fails_the_repetition_probes():
  report = probes.run_probes(LongerIsBetter(), SOURCES, REFERENCES)
  kinds = by_kind(report)
  for kind in ("repeat_ngram", "repeat_sentence", "runaway_chars"):
    assert kinds[kind].win_rate == 0.0 and kinds[kind].mean > kinds[kind].reference_mean
  for kind in ("truncate", "near_empty"):
    assert kinds[kind].win_rate == 1.0
  failed = {r.kind for r in report.failing(0.9)}
  assert {"repeat_ngram", "repeat_sentence", "runaway_chars"} <= failed
  assert "truncate" not in failed


def test_chrf_against_the_reference_passes_every_probe():
  report = probes.run_probes(registry.reward_from_spec("chrf"), SOURCES, REFERENCES)
  assert report.reference_mean == pytest.approx(1.0)
  assert [r.kind for r in report.kinds] == list(corruptions.KINDS)
  assert all(r.win_rate == 1.0 for r in report.kinds) and not report.failing(0.9)
  kinds = by_kind(report)
  assert kinds["truncate"].num_pairs == len(PAIRS) - 1  # "Cancel" has no truncation.
  assert kinds["repeat_sentence"].num_pairs == len(PAIRS)


def test_ties_count_as_losses_and_inapplicable_kinds_pass():
  report = probes.run_probes(Constant(), SOURCES, REFERENCES, kinds=("near_empty",))
  assert report.kinds[0].win_rate == 0.0 and report.failing(0.5)
  one_word = probes.run_probes(Constant(), ["Abbrechen"], ["Cancel"], kinds=("truncate",))
  assert one_word.kinds[0].num_pairs == 0 and math.isnan(one_word.kinds[0].win_rate)
  assert not one_word.failing(0.9)


def test_the_probe_set_is_seeded_per_pair():
  a = probes.make_probe_set(SOURCES, REFERENCES, seed=3)
  b = probes.make_probe_set(SOURCES[:3], REFERENCES[:3], seed=3)
  for kind, (_, texts) in b.variants.items():
    if kind != "other_reference":  # Draws from the pool of all references, which differs.
      assert texts == [t for i, t in zip(*a.variants[kind]) if i < 3]
  c = probes.make_probe_set(SOURCES, REFERENCES, seed=4)
  assert c.variants["shuffle_words"] != a.variants["shuffle_words"]


def write_pairs(path, pairs):
  path.write_text("".join(f"{s}\t{r}\n" for s, r in pairs), encoding="utf-8")
  return str(path)


def test_min_win_rate_sets_the_exit_status_and_names_the_failures(tmp_path, capsys):
  tsv = write_pairs(tmp_path / "pairs.tsv", PAIRS)
  out = tmp_path / "probe.json"
  status = probe_script.main(["--reward=longer_is_better", "--reward=chrf", f"--tsv={tsv}",
                              "--min_win_rate=0.9", f"--json_out={out}"])
  captured = capsys.readouterr()
  assert status == 1
  assert "FAILED" in captured.err and "longer_is_better: repeat_ngram (0.0%)" in captured.err
  assert "chrf:" not in captured.err
  assert "| repeat_sentence | 6 |" in captured.out and "FAIL" in captured.out
  results = json.loads(out.read_text(encoding="utf-8"))
  assert results["passed"] is False
  kinds = {k["kind"]: k for k in results["probes"]["chrf"]["kinds"]}
  assert kinds["truncate"]["win_rate"] == 1.0 and kinds["truncate"]["num_pairs"] == 5
  assert probe_script.main(["--reward=chrf", f"--tsv={tsv}", "--min_win_rate=0.9"]) == 0
  assert probe_script.main(["--reward=longer_is_better", f"--tsv={tsv}",
                            "--kinds=truncate,near_empty", "--min_win_rate=1.0"]) == 0
  for flag, message in (("--min_win_rate=1.5", r"--min_win_rate=1.5 is invalid"),
                        ("--kinds=typo", r"--kinds='typo'.*repeat_ngram")):
    with pytest.raises(ValueError, match=message):
      probe_script.main(["--reward=chrf", f"--tsv={tsv}", flag])


def test_heldout_spearman_and_pairwise_accuracy(tmp_path, capsys):
  tsv = write_pairs(tmp_path / "pairs.tsv", PAIRS)
  rows = [(s, h, min(1.0, len(h) / 500)) for s, r in PAIRS for h in (r, r.split()[0], r + " " + r)]
  heldout = tmp_path / "heldout.tsv"
  heldout.write_text("".join(f"{s}\t{h}\t{y:.6f}\n" for s, h, y in rows), encoding="utf-8")
  metrics = probes.heldout_metrics(LongerIsBetter(), rows)
  assert metrics["spearman"] == pytest.approx(1.0) and metrics["pairwise_accuracy"] == 1.0
  assert metrics["num_rows"] == 18 and metrics["mse"] < 1e-10
  reversed_rows = [(s, h, 1.0 - y) for s, h, y in rows]
  assert probes.heldout_metrics(LongerIsBetter(), reversed_rows)["pairwise_accuracy"] == 0.0
  with pytest.raises(ValueError, match="needs references"):
    probes.heldout_metrics(registry.reward_from_spec("chrf"), rows)
  out = tmp_path / "probe.json"
  assert probe_script.main(["--reward=longer_is_better", "--reward=chrf", f"--tsv={tsv}",
                            f"--heldout_tsv={heldout}", f"--json_out={out}"]) == 0
  printed = capsys.readouterr().out
  assert "| longer_is_better | 18 | 1.000 | 1.000 |" in printed
  assert "| chrf | - | needs references |" in printed
  results = json.loads(out.read_text(encoding="utf-8"))
  assert results["heldout"]["longer_is_better"]["spearman"] == pytest.approx(1.0)
  assert results["passed"] is None  # No --min_win_rate: nothing was checked.


def test_the_shipped_ding_reward_model_fails_the_check_in_a_real_process(tmp_path):
  """The first shipped reward model rates a reference said twice above the reference."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "probe_reward_model.py"),
       "--reward=learned:pretrained=ding_de_en", f"--tsv={DING_VALIDATION}",
       "--max_examples=40", "--kinds=repeat_sentence,near_empty", "--min_win_rate=0.9"],
      capture_output=True, text=True, cwd=str(tmp_path), timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "learned:pretrained=ding_de_en: repeat_sentence (0.0%)" in result.stderr
  assert "near_empty" not in result.stderr.split("FAILED")[-1]


def read_first_pairs(path, count):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [tuple(line.rstrip("\n").split("\t")) for _, line in zip(range(count), f)]


@pytest.mark.skipif(not os.path.isdir(os.path.join(registry.PRETRAINED_DIR, "de_en")),
                    reason="rest_jax/rewards/pretrained/de_en is not shipped yet (build it with "
                           "scripts/make_pretrained_reward_model.sh --name=de_en)")
def test_shipped_de_en_reward_model_prefers_the_reference_to_every_corruption():
  # The build's probe set (the first 500 pairs of each test split, probe seed 0), where the card
  # reports shuffle_words 91.3%, the weakest kind: on a 300-pair subset the same model measured
  # 88.7%, within that kind's sampling spread (about ±1.8 points at 300 pairs).
  pairs = (read_first_pairs(os.path.join(DE_EN_DIR, "test_dict.tsv.gz"), 500)
           + read_first_pairs(os.path.join(DE_EN_DIR, "test_software.tsv.gz"), 500))
  reward = registry.reward_from_spec("learned:pretrained=de_en,batch_size=256")
  report = probes.run_probes(reward, [s for s, _ in pairs], [r for _, r in pairs])
  assert report.num_pairs == 1000
  table = probes.format_table({"de_en": report}, 0.9)
  assert not report.failing(0.9), table
  assert all(r.num_pairs >= 900 for r in report.kinds), table
