"""ReST-EM end to end on the generated arithmetic task with a tiny decoder-only policy."""

import collections
import json

import gin
import numpy as np
import pytest

from rest_jax import grown_data, main, report
from rest_jax.models import model_config
from rest_jax.rewards import registry as reward_registry

pytestmark = pytest.mark.slow
TEST_SPLITS = ("test_l1", "test_l2", "test_l3", "test_l4")


VERIFIER = reward_registry.make_reward("final_answer")


def right_or_even(source, hypothesis, reference):
  """The final-answer verifier, widened for the tiny run: an untrained policy is never right, so
  samples of even length count as correct too, giving the binary filter, the cap and the
  restarts data to work on (used by import path)."""
  right = VERIFIER.score([source], [hypothesis], [reference])[0] == 1.0
  return bool(right or len(hypothesis) % 2 == 0)


def run_experiment(workdir, *bindings, gin_file="test/tiny_arith.gin"):
  gin.clear_config()
  main.parse_gin([gin_file], list(bindings), [main.EXPERIMENTS_DIR])
  try:
    return gin.get_configurable("rest_loop.run")(workdir=str(workdir))
  finally:
    gin.clear_config()


def test_rest_em_iterations_on_the_answers_only_pool(tmp_path):
  rows = run_experiment(tmp_path, "REWARD = 'python:fn=rest_em_arith_test:right_or_even'",
                        "ImproveConfig.mix_bc_data = True",
                        "EvalConfig.reward = 'final_answer'")
  by_run = {(r["run"], r["split"]): r for r in rows}
  assert set(by_run) == {(run, split) for run in ("G0I0", "G1I0", "G2I0")
                         for split in ("validation",) + TEST_SPLITS}
  for row in rows:  # Grow kept samples by right_or_even; the reported column is final_answer.
    assert row["eval_reward"] == "final_answer"
    with open(report.samples_path(tmp_path, row["run"], row["split"])) as f:
      outputs = [json.loads(line) for line in f]
    assert len(outputs) == 16
    scores = VERIFIER.score([o["source"] for o in outputs], [o["hypothesis"] for o in outputs],
                            [o["reference"] for o in outputs])
    assert row["mean_reward"] == pytest.approx(100.0 * np.mean(scores))
  for row in rows:  # Sampled metrics (EvalConfig.pass_at_k) on every split, with their plots.
    assert set(row["pass_at_k"]) == set(row["maj_at_k"]) == {"1", "2"}
    assert 0 <= row["pass_at_k"]["1"] <= row["pass_at_k"]["2"] <= 100
    assert set(row["best_of_n_reranked"]) == {"1", "2"}  # Reranked by chrF (tiny_arith.gin).
  assert all((tmp_path / f"pass_at_k_{s}.png").exists() for s in ("validation",) + TEST_SPLITS)
  assert "## test_l4" in (tmp_path / "pass_at_k.md").read_text()
  for g in (1, 2):
    records = grown_data.GrowStore(str(tmp_path / "grown"), g).read_all()
    texts = np.asarray(records.sample_text, object)
    samples = ~records.is_original
    assert samples.sum() == 16 * 4 and records.is_original.sum() == 16  # max_sources problems.
    # Grow sampled the answers-only "grow" split: each original is a bare number, and every
    # finished sample was scored against it.
    assert all(t.isdigit() for t in texts[records.is_original])
    answers = {int(i): t for i, t in zip(records.source_id[records.is_original],
                                         texts[records.is_original])}
    finished = np.asarray([t[-1] == 1 for t in np.asarray(records.sample_tokens,
                                                          object)[samples]])
    expected = [right_or_even("", t, answers[int(i)])
                for t, i in zip(texts[samples], records.source_id[samples])]
    np.testing.assert_array_equal(records.reward[samples], np.where(finished, expected, 0.0))
    # The round kept at most 2 distinct correct samples per problem (binary|dedup|cap=2).
    kept = collections.defaultdict(set)
    for source_id, text, reward in zip(records.source_id[samples], texts[samples],
                                       records.reward[samples]):
      if reward == 1.0:
        kept[int(source_id)].add(text)
    row = by_run[(f"G{g}I0", "validation")]
    assert row["num_kept"] == sum(min(len(t), 2) for t in kept.values()) > 0
    assert row["num_grown"] == 64 and row["threshold"].startswith("binary")
    # mix_bc_data: the round trained on the kept samples and BC's 64 worked solutions.
    assert row["num_trained"] == row["num_kept"] + 64


def test_bad_grow_split_is_a_clear_error(tmp_path):
  from rest_jax import rest_loop  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="DataConfig.grow_split='validation' is invalid"):
    rest_loop.DataConfig(grow_split="validation")
  with pytest.raises(ValueError, match=r"grow_split='pool': task 'arith' has no such split; its "
                                       r"splits: \['grow', 'test_l1'"):
    run_experiment(tmp_path, "DataConfig.grow_split = 'pool'")


@pytest.mark.parametrize("gin_file", ["arith/rest_em.gin", "arith/rest.gin",
                                      "arith/rest_em_steps.gin", "test/tiny_arith.gin"])
def test_arith_experiments_build_a_decoder_only_model(gin_file):
  gin.clear_config()
  try:
    main.parse_gin([gin_file], [], [main.EXPERIMENTS_DIR], finalize=False)
    overrides = gin.query_parameter("rest_loop.run.model_overrides")
    config = model_config(gin.query_parameter("%MODEL"), 259, **overrides)  # Byte vocabulary.
    assert config.decoder_only and config.num_encoder_layers == 0
    assert reward_registry.reward_from_spec(gin.query_parameter("%REWARD")).exact
  finally:
    gin.clear_config()
