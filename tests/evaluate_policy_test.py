"""`python -m rest_jax.evaluate_policy`: a tiny BC workdir scored on TSV files, and bad input.

One module-scoped BC-only run of the tiny experiment (rest_loop_test's helper) provides the
policies; every file the tests write is under tmp_path.
"""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rest_jax import checkpointing, evaluate_policy, text_metrics
from rest_jax.data import ding_tfds
from rest_jax.rewards import base, registry
from rest_loop_test import run_experiment

DING_VALIDATION = os.path.join(os.path.dirname(ding_tfds.__file__), "ding", "validation.tsv.gz")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A finished BC phase: checkpoints_best/, checkpoints_bc/ and checkpoints/ all hold one."""
  path = tmp_path_factory.mktemp("bc_workdir")
  run_experiment(path, "rest_loop.run.stop_after_phase = 'bc'",
                 "DataConfig.max_validation_examples = 16", "DataConfig.max_test_examples = 16",
                 "bc/TrainPhaseConfig.max_steps = 6", "bc/TrainPhaseConfig.eval_every = 6")
  return path


def ding_pairs(start, count):
  with gzip.open(DING_VALIDATION, "rt", encoding="utf-8") as f:
    lines = f.read().splitlines()[start:start + count]
  return [tuple(line.split("\t")) for line in lines]


def write_tsv(path, pairs):
  text = "".join(f"{s}\t{r}\n" for s, r in pairs)
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt", encoding="utf-8") as f:
    f.write(text)
  return str(path)


def read_translations(path):
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]


def test_scores_the_final_policy_of_a_workdir_on_each_file(workdir, tmp_path, capsys):
  a_pairs, b_pairs = ding_pairs(0, 10), ding_pairs(10, 5)
  a = write_tsv(tmp_path / "a.tsv", a_pairs)
  b = write_tsv(tmp_path / "b.tsv.gz", b_pairs)
  out = tmp_path / "out"
  records = evaluate_policy.run([f"--policy={workdir}", f"--tsv={a}", f"--tsv={b}",
                                 f"--output_dir={out}", "--max_examples=8", "--batch_size=8"])
  printed = capsys.readouterr().out
  assert f"policy: {workdir}/checkpoints_best/" in printed and "(best;" in printed
  assert "| a.tsv | 8 |" in printed and "| b.tsv.gz | 5 |" in printed
  chrf = registry.reward_from_spec("chrf")
  for record, pairs, stem in zip(records, (a_pairs[:8], b_pairs), ("a", "b")):
    rows = read_translations(out / f"{stem}.translations.tsv")
    assert [tuple(row[:2]) for row in rows] == pairs  # One line per pair, in order.
    sources, refs, hyps = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    rewards = base.score_batch(chrf, sources, hyps, refs)
    np.testing.assert_allclose([float(r[3]) for r in rows], rewards, atol=1e-6)
    expected = text_metrics.summarize_translations(sources, hyps, refs, rewards)
    with open(out / f"{stem}.metrics.json", encoding="utf-8") as f:
      written = json.load(f)
    assert written == record
    assert written["metrics"] == pytest.approx(expected)
    assert written["policy"]["which"] == "best" and written["policy"]["task"] == "ding_de_en"
    assert written["settings"]["decode"] == "greedy" and written["num_truncated_sources"] == 0
  assert sorted(os.listdir(out)) == ["a.metrics.json", "a.translations.tsv", "b.metrics.json",
                                     "b.translations.tsv"]  # No temporary file left behind.


def test_which_bc_equals_the_bc_checkpoint_directory_given_directly(workdir, tmp_path):
  tsv = write_tsv(tmp_path / "c.tsv", ding_pairs(20, 6))
  common = [f"--tsv={tsv}", "--decode=beam", "--beam_size=2", "--batch_size=8"]
  by_which = evaluate_policy.run([f"--policy={workdir}", "--which=bc",
                                  f"--output_dir={tmp_path / 'which'}"] + common)
  step_dir = workdir / "checkpoints_bc" / "0"
  direct = evaluate_policy.run([f"--policy={step_dir}", f"--output_dir={tmp_path / 'direct'}"]
                               + common)
  assert by_which[0]["policy"]["checkpoint"] == direct[0]["policy"]["checkpoint"] == str(step_dir)
  assert (by_which[0]["policy"]["which"], direct[0]["policy"]["which"]) == ("bc", "checkpoint")
  assert by_which[0]["settings"]["beam_size"] == 2
  assert (read_translations(tmp_path / "which" / "c.translations.tsv")
          == read_translations(tmp_path / "direct" / "c.translations.tsv"))
  assert by_which[0]["metrics"] == direct[0]["metrics"]
  root = evaluate_policy.find_policy(str(workdir / "checkpoints_bc"))  # A Checkpointer root.
  assert (root.directory, root.step, root.which) == (str(workdir / "checkpoints_bc"), 0,
                                                     "checkpoint")


def _checkpoint_without_fingerprint(tmp_path):
  directory = str(tmp_path / "no_fingerprint")
  ckpt = checkpointing.Checkpointer(directory)
  ckpt.save(5, {"w": np.zeros(3, np.float32)}, {"round": 0})
  ckpt.close()
  return directory


def _bad_input_cases():
  """(name, argv overrides given (tmp_path, workdir), exception type, message regex)."""
  return [
      ("missing policy", lambda t, w: {"policy": str(t / "nowhere")}, FileNotFoundError,
       r"--policy=.*nowhere' does not exist; allowed: a ReST workdir"),
      ("no checkpoint", lambda t, w: {"policy": str(t)}, checkpointing.CheckpointError,
       r"no checkpoint in .*; allowed: a ReST workdir"),
      ("no fingerprint", lambda t, w: {"policy": _checkpoint_without_fingerprint(t)},
       checkpointing.CheckpointError, r"no_fingerprint/5 has no fingerprint meta"),
      ("which outside a workdir", lambda t, w: {"policy": str(w / "checkpoints_bc"),
                                                "which": "bc"},
       ValueError, r"--which=bc needs a ReST workdir"),
      ("unknown which", lambda t, w: {"which": "final"}, ValueError,
       r"--which='final' is invalid; allowed: auto, best, bc, latest"),
      ("missing tsv", lambda t, w: {"tsv": str(t / "missing.tsv")}, FileNotFoundError,
       r"--tsv=.*missing.tsv': no such file"),
      ("malformed tsv", lambda t, w: {"tsv": write_tsv(t / "bad.tsv", [("gut", "good"),
                                                                      ("kaputt", "")])},
       ValueError, r"--tsv: .*bad.tsv, line 2: empty reference"),
      ("unknown reward", lambda t, w: {"reward": "rouge"}, ValueError,
       # The exact list is pinned by rewards_metric_test; here: the message lists the registry.
       r"--reward='rouge' is invalid; allowed: " + ", ".join(registry.list_rewards()) + "$"),
      ("bad reward option", lambda t, w: {"reward": "chrf:order=3"}, ValueError,
       r"--reward='chrf:order=3': unknown option"),
      ("unknown decode", lambda t, w: {"decode": "sample"}, ValueError,
       r"--decode='sample' is invalid; allowed: greedy, beam"),
      ("output_dir is a file", lambda t, w: {"output_dir": write_tsv(t / "f.tsv", [])},
       ValueError, r"--output_dir=.*f.tsv' is an existing file"),
      ("non-positive batch", lambda t, w: {"batch_size": "0"}, ValueError,
       r"--batch_size=0 is invalid; allowed: a positive integer"),
  ]


@pytest.mark.parametrize("name, overrides, error, message", _bad_input_cases(),
                         ids=[c[0] for c in _bad_input_cases()])
def test_bad_input_fails_clearly_before_loading_the_policy(workdir, tmp_path, monkeypatch, name,
                                                           overrides, error, message):
  del name

  def must_not_load(*args, **kwargs):
    raise AssertionError("the policy was loaded before the input was checked")

  monkeypatch.setattr(evaluate_policy, "load_policy", must_not_load)
  flags = {"policy": str(workdir), "tsv": write_tsv(tmp_path / "ok.tsv", ding_pairs(0, 2)),
           "output_dir": str(tmp_path / "out")}
  flags.update(overrides(tmp_path, workdir))
  with pytest.raises(error, match=message):
    evaluate_policy.run([f"--{k}={v}" for k, v in flags.items()])
  assert not os.path.exists(tmp_path / "out")


def test_command_line_error_is_one_line_and_imports_no_tensorflow(workdir, tmp_path):
  tsv = write_tsv(tmp_path / "ok.tsv", ding_pairs(0, 2))
  code = ("import sys; from rest_jax import evaluate_policy as e; "
          f"rc = e.main(['--policy={workdir}', '--tsv={tsv}', '--output_dir={tmp_path}/o', "
          "'--reward=chrf:order=3']); print(rc, 'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
  assert result.stdout.split() == ["1", "False"]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "--reward='chrf:order=3'" in errors[0]
  assert "Traceback" not in result.stderr


def test_table_adds_every_extra_number_of_the_summary():
  metrics = dict(mean_reward=50.0, bleu=1.0, chrf=2.0, length_ratio=1.0, distinct_1=0.5,
                 distinct_2=0.25, num_examples=3, novel_rate=0.125)
  table = evaluate_policy.markdown_table([{"tsv": "/x/y.tsv.gz", "metrics": metrics}])
  header, _, row = table.splitlines()
  assert header.endswith("| distinct-2 | novel rate |")
  assert row == "| y.tsv.gz | 3 | 50.00 | 1.00 | 2.00 | 1.000 | 0.500 | 0.250 | 0.125 |"
  assert [evaluate_policy.output_stem(p) for p in ("d/news.tsv.gz", "x.tsv", "plain")] == [
      "news", "x", "plain"]


def test_long_sources_are_cut_to_the_model_limit_keeping_eos():
  import seqio  # pylint: disable=g-import-not-at-top
  pairs, cut = evaluate_policy.encode_pairs([("abcdef", "x"), ("ab", "y")],
                                            seqio.ByteVocabulary(), 4)
  assert cut == 1 and [p.inputs[-1] for p in pairs] == [1, 1]
  assert [len(p.inputs) for p in pairs] == [4, 3]


def test_source_prefix_must_be_the_runs():
  import hashlib
  prefix = "translate German to English: "
  task = f"ding_de_en.vocab_t5.prefix_{hashlib.sha256(prefix.encode()).hexdigest()[:8]}"
  assert evaluate_policy.check_source_prefix({"task": task}, prefix) == prefix
  with pytest.raises(ValueError, match="--source_prefix is required"):
    evaluate_policy.check_source_prefix({"task": task}, None)
  with pytest.raises(ValueError, match="is not the prefix the policy was trained with"):
    evaluate_policy.check_source_prefix({"task": task}, "translate: ")
  assert evaluate_policy.check_source_prefix({"task": "ding_de_en"}, None) == ""
