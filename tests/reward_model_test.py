"""Tests for the learned reward model: training, checkpoints, scoring, TSV input, policy loading.

The synthetic task: sources and hypotheses are strings over a 16-letter alphabet (byte
vocabulary) and the target reward is the fraction of hypothesis letters that occur anywhere in
the source. It needs both sides (neither alone predicts the score), and a toy model learns it
in a few hundred steps on two CPU cores.
"""

import dataclasses
import flax.linen as nn
import jax
import numpy as np
import pytest

from rest_jax import checkpointing, optim, sharding, train_state
from rest_jax.configs import MeshConfig, OptimizerConfig
from rest_jax.models import model_config
from rest_jax.rewards import base, registry
from rest_jax.rewards import reward_model as rm
from rest_jax.rewards import reward_model_training as training
import toy_setup

ALPHABET = "abcdefghijklmnop"
MAX_LEN = 16
VOCAB_SPEC = "byte"
VOCAB_SIZE = 259  # seqio.ByteVocabulary: 3 special ids + 256 bytes.
MESH2 = sharding.make_mesh(MeshConfig(data=2), jax.devices()[:2])


def overlap_example(rng):
  source = "".join(rng.choice(list(ALPHABET), rng.integers(6, 12)))
  inside = sorted(set(source))
  outside = [c for c in ALPHABET if c not in inside]
  length = int(rng.integers(4, 11))
  k = int(rng.integers(0, length + 1))
  letters = list(rng.choice(inside, k)) + list(rng.choice(outside, length - k))
  rng.shuffle(letters)
  return source, "".join(letters), k / length


def overlap_rows(n, seed):
  rng = np.random.default_rng(seed)
  return [overlap_example(rng) for _ in range(n)]


def preference_rows(n, seed):
  rows, rng = [], np.random.default_rng(seed)
  while len(rows) < n:
    source, a, score_a = overlap_example(rng)
    inside = sorted(set(source))
    outside = [c for c in ALPHABET if c not in inside]
    length = len(a)
    k = int(rng.integers(0, length + 1))
    b = "".join(rng.permutation(list(rng.choice(inside, k)) + list(rng.choice(outside,
                                                                              length - k))))
    if abs(k / length - score_a) >= 0.2:
      rows.append((source, a, b) if score_a > k / length else (source, b, a))
  return rows


def train_config(mode, steps):
  return training.RewardTrainingConfig(mode=mode, steps=steps, batch_size=64, learning_rate=3e-3,
                                       warmup_steps=30, max_source_len=MAX_LEN,
                                       max_hypothesis_len=MAX_LEN, eval_every=steps // 2,
                                       eval_batch_size=64, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = model_config("toy", VOCAB_SIZE, max_len=MAX_LEN)
  result = training.train_reward_model(config, train_config("regression", 150), VOCAB_SPEC,
                                       overlap_rows(3000, seed=0), overlap_rows(256, seed=1),
                                       mesh=MESH2, log=lambda _: None)
  path = str(tmp_path_factory.mktemp("reward_model") / "checkpoint")
  rm.save_reward_model(path, result.best_step, result.params, config, VOCAB_SPEC, MAX_LEN,
                       MAX_LEN, training={"best": result.best_metrics})
  reward = rm.LearnedReward(config, result.params, VOCAB_SPEC, max_source_len=MAX_LEN,
                            max_hypothesis_len=MAX_LEN, batch_size=64, mesh=MESH2)
  return config, result, path, reward


def test_learns_the_synthetic_reward_on_held_out_data(trained):
  _, result, _, reward = trained
  assert result.best_metrics["spearman"] >= 0.9
  sources, hypotheses, targets = zip(*overlap_rows(300, seed=2))  # Never seen in training.
  scores = base.score_batch(reward, sources, hypotheses)
  assert scores.dtype == np.float32 and np.all((scores >= 0) & (scores <= 1))
  assert training.spearman(scores, np.asarray(targets)) >= 0.9


def test_checkpoint_round_trip_and_registry(trained):
  _, _, path, reward = trained
  sources, hypotheses, _ = zip(*overlap_rows(100, seed=3))
  expected = base.score_batch(reward, sources, hypotheses)
  loaded = rm.LearnedReward.from_checkpoint(path, batch_size=64, mesh=MESH2)
  np.testing.assert_array_equal(base.score_batch(loaded, sources, hypotheses), expected)
  # By name, on the default 8-device mesh: the same scores up to float rounding.
  by_name = registry.make_reward("learned", path=path)
  assert by_name.needs_reference is False and by_name.mesh.devices.size == 8
  np.testing.assert_allclose(base.score_batch(by_name, sources, hypotheses), expected, atol=1e-5)
  by_spec = registry.reward_from_spec(f"learned:path={path},batch_size=64")
  np.testing.assert_allclose(base.score_batch(by_spec, sources, hypotheses), expected, atol=1e-5)


def test_scoring_pads_batches_and_truncates_long_inputs(trained):
  _, _, _, reward = trained
  sources, hypotheses, _ = zip(*overlap_rows(70, seed=4))  # 64 + a padded batch of 6.
  all_scores = reward.score(list(sources), list(hypotheses))
  np.testing.assert_allclose(reward.score(list(sources[:5]), list(hypotheses[:5])),
                             all_scores[:5], atol=1e-6)
  long_text = "abcdefghijklmnop" * 4
  long_score = reward.score([long_text], [long_text + "a"])
  assert long_score.shape == (1,) and 0 <= long_score[0] <= 1


def test_preference_training_orders_held_out_pairs():
  config = model_config("toy", VOCAB_SIZE, max_len=MAX_LEN)
  result = training.train_reward_model(config, train_config("preference", 60), VOCAB_SPEC,
                                       preference_rows(2000, seed=5),
                                       preference_rows(256, seed=6), mesh=MESH2,
                                       log=lambda _: None)
  assert result.best_metrics["pairwise_accuracy"] >= 0.85


def test_missing_or_malformed_checkpoints_name_the_path(tmp_path, trained):
  missing = str(tmp_path / "no_such_model")
  with pytest.raises(FileNotFoundError, match="no_such_model"):
    rm.LearnedReward.from_checkpoint(missing)
  with pytest.raises(FileNotFoundError, match="no_such_model"):
    registry.reward_from_spec(f"learned:path={missing}")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(checkpointing.CheckpointError, match="empty"):
    rm.LearnedReward.from_checkpoint(str(empty))
  not_a_reward_model = str(tmp_path / "policy_like")
  ckpt = checkpointing.Checkpointer(not_a_reward_model)
  ckpt.save(1, {"params": {"w": np.zeros(3, np.float32)}}, {"vocabulary": "byte"})
  ckpt.close()
  with pytest.raises(checkpointing.CheckpointError, match=r"policy_like.*meta lacks"):
    rm.LearnedReward.from_checkpoint(not_a_reward_model)


def test_malformed_tsv_lines_are_counted_with_line_numbers(tmp_path):
  lines = ["Hallo.\tHello.\t0.9", "kein\ttab", "Hallo.\tHi.\tviel", "Hallo.\tHey.\t1.5",
           "\tHello.\t0.5", "", "Guten Tag.\t\t0.0", "a\tb\tc\td"]
  path = tmp_path / "scores.tsv"
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  rows, report = training.read_reward_tsv(str(path), "regression")
  assert rows == [("Hallo.", "Hello.", 0.9), ("Guten Tag.", "", 0.0)]
  assert (report.num_lines, report.num_pairs, report.num_skipped) == (8, 2, 6)
  assert report.skipped_lines == {"2 fields instead of 3": [2], "score is not a number": [3],
                                  "score outside [0, 1]": [4], "empty source": [5],
                                  "empty line": [6], "4 fields instead of 3": [8]}
  assert "2 rows from 8 lines; skipped 6" in report.summary()
  assert "score outside [0, 1] x1 (lines 4)" in report.summary()
  with pytest.raises(ValueError, match=r"scores.tsv, line 2: 2 fields instead of 3"):
    training.read_reward_tsv(str(path), "regression", strict=True)
  prefs = tmp_path / "prefs.tsv"
  prefs.write_text("Hallo.\tHello.\tHell.\nHallo.\tHello.\t\n", encoding="utf-8")
  rows, report = training.read_reward_tsv(str(prefs), "preference")
  assert rows == [("Hallo.", "Hello.", "Hell.")] and report.skipped_lines == {
      "empty rejected": [2]}


def test_validation_split_keeps_sources_together_and_metrics():
  rows = [(f"source {i % 50}", f"hyp {i}", (i % 7) / 6) for i in range(400)]
  train, validation = training.split_by_source(rows, 0.2, seed=0)
  assert len(train) + len(validation) == 400 and 0 < len(validation) < 200
  assert not {r[0] for r in train} & {r[0] for r in validation}
  scores = np.array([0.1, 0.2, 0.3, 0.9, 0.5])
  targets = np.array([0.0, 0.5, 1.0, 0.2, 0.2])
  groups = np.array([0, 0, 0, 1, 1])
  # Group 0: three correctly ordered pairs; group 1: equal targets give no pair.
  assert training.pairwise_accuracy(scores, targets, groups) == 1.0
  assert training.pairwise_accuracy(-scores, targets, groups) == 0.0
  assert training.pairwise_accuracy(np.zeros(5), targets, groups) == 0.5  # Ties count 1/2.
  assert training.spearman(np.ones(5), targets) == 0.0
  with pytest.raises(ValueError, match="mode='ranking'"):
    training.RewardTrainingConfig(mode="ranking")


def test_load_policy_for_sampling_restores_only_the_params(tmp_path):
  model = toy_setup.toy_model()
  tx = optim.make_optimizer(OptimizerConfig())
  # Random params from the abstract shapes: a real PolicyState without compiling an init.
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda a: rng.normal(size=a.shape).astype(a.dtype),
      nn.meta.unbox(train_state.abstract_boxed_params(model)))
  state = train_state.PolicyState(step=np.int32(5), round_step=np.int32(5), params=params,
                                  loss_params={}, opt_state=tx.init({"params": params,
                                                                     "loss_params": {}}))
  directory = str(tmp_path / "policy")
  ckpt = checkpointing.Checkpointer(directory)
  ckpt.save(7, state, {"model_config": dataclasses.asdict(model.config), "vocabulary": "byte",
                       "round": 2})
  ckpt.close()
  policy = training.load_policy_for_sampling(directory, mesh=toy_setup.mesh(data=8))
  assert policy.step == 7 and policy.vocabulary_name == "byte" and policy.meta["round"] == 2
  # One step directory (e.g. a copied `checkpoints/7`) selects that step.
  assert training.load_policy_for_sampling(f"{directory}/7", mesh=MESH2).step == 7
  with pytest.raises(ValueError, match="directory of step 7, but step 3 was asked for"):
    training.load_policy_for_sampling(f"{directory}/7", 3, mesh=MESH2)
  assert policy.model.config == model.config and policy.vocabulary.vocab_size == VOCAB_SIZE
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(policy.params), params)
  leaf = jax.tree_util.tree_leaves(policy.params)[0]
  assert leaf.sharding.mesh.devices.size == 8
  # The ReST loop's layout: a workdir whose checkpoints/ hold bare params, the model config in
  # meta["fingerprint"]["model"] and no vocabulary (given explicitly here).
  workdir = tmp_path / "workdir"
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
  ckpt.save(3, params, {"kind": "policy", "fingerprint": {
      "model": dataclasses.asdict(model.config), "task": "no_such_task"}})
  ckpt.close()
  policy = training.load_policy_for_sampling(str(workdir), mesh=MESH2, vocabulary_spec="byte")
  assert policy.step == 3 and policy.vocabulary_name == "byte"
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(policy.params), params)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    training.load_policy_for_sampling(str(tmp_path / "nowhere"))
  bare = str(tmp_path / "bare")
  ckpt = checkpointing.Checkpointer(bare)
  ckpt.save(1, state, {"round": 0})
  ckpt.close()
  with pytest.raises(checkpointing.CheckpointError, match=r"bare/1: meta has no 'model_config'"):
    training.load_policy_for_sampling(bare)
  with pytest.raises(checkpointing.CheckpointError, match=r"meta has no 'vocabulary'"):
    training.load_policy_for_sampling(bare, model_config=model.config)


def test_pretrained_ding_reward_model_loads_by_name_and_scores_real_pairs():
  """The reward model shipped for the quickstart loads by name, equals loading its directory,
  and on real validation pairs ranks the reference above a near-empty output. (It over-rates
  repetition and truncation: docs/rewards.md has the probe table.)"""
  import gzip  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from rest_jax.data import ding_tfds  # pylint: disable=g-import-not-at-top
  assert "ding_de_en" in registry.pretrained_reward_models()
  reward = registry.reward_from_spec("learned:pretrained=ding_de_en,batch_size=128")
  assert reward.needs_reference is False
  assert reward.options == rm.RewardModelOptions()  # Its meta predates the options: defaults.
  path = os.path.join(os.path.dirname(ding_tfds.__file__), "ding", "validation.tsv.gz")
  with gzip.open(path, "rt", encoding="utf-8") as f:
    pairs = [line.rstrip("\n").split("\t")[:2] for line in f][:256]
  sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
  ref = base.score_batch(reward, sources, references)
  by_path = registry.make_reward(
      "learned", path=registry.pretrained_reward_model_path("ding_de_en"), batch_size=128)
  np.testing.assert_allclose(base.score_batch(by_path, sources, references), ref, atol=1e-6)
  empty = base.score_batch(reward, sources, ["." for _ in references])
  assert empty.mean() < ref.mean() - 0.1
  assert (empty < ref).mean() > 0.95


def test_mean_max_pooling_trains_and_round_trips_through_its_checkpoint(tmp_path):
  config = model_config("toy", VOCAB_SIZE, max_len=MAX_LEN)
  options = rm.RewardModelOptions(pooling="mean_max")
  result = training.train_reward_model(config, train_config("regression", 40), VOCAB_SPEC,
                                       overlap_rows(512, seed=7), overlap_rows(64, seed=8),
                                       mesh=MESH2, log=lambda _: None, options=options)
  head_inputs = result.params["head_hidden"]["kernel"].shape[0]
  assert head_inputs == 4 * config.d_model + 3  # [mean, max] per direction + length features.
  path = str(tmp_path / "mean_max")
  rm.save_reward_model(path, result.best_step, result.params, config, VOCAB_SPEC, MAX_LEN,
                       MAX_LEN, options=options)
  loaded = rm.LearnedReward.from_checkpoint(path, batch_size=64, mesh=MESH2)
  assert loaded.options == options
  direct = rm.LearnedReward(config, result.params, VOCAB_SPEC, max_source_len=MAX_LEN,
                            max_hypothesis_len=MAX_LEN, batch_size=64, mesh=MESH2,
                            options=options)
  sources, hypotheses, _ = zip(*overlap_rows(20, seed=9))
  np.testing.assert_array_equal(base.score_batch(loaded, sources, hypotheses),
                                base.score_batch(direct, sources, hypotheses))
  with pytest.raises(ValueError, match=r"pooling='max' is invalid.*\['mean', 'mean_max'\]"):
    rm.RewardModelOptions(pooling="max")


def _saved_byte_policy(tmp_path, **overrides):
  """A toy byte-vocabulary policy with random parameters, saved as a ReST-style checkpoint."""
  model = toy_setup.toy_model(vocab=VOCAB_SIZE, max_len=MAX_LEN, value_head=True, **overrides)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda a: rng.normal(size=a.shape).astype(a.dtype),
      nn.meta.unbox(train_state.abstract_boxed_params(model)))
  directory = str(tmp_path / "policy")
  ckpt = checkpointing.Checkpointer(directory)
  ckpt.save(4, params, {"model_config": dataclasses.asdict(model.config), "vocabulary": "byte"})
  ckpt.close()
  return model, params, directory


def test_warm_start_copies_the_policy_encoder_and_refuses_other_shapes(tmp_path):
  model, policy_params, _ = _saved_byte_policy(tmp_path)
  config = dataclasses.replace(model.config, value_head=False)
  fresh = rm.init_params(config, 0, MESH2)
  warm = rm.warm_start_encoder(fresh, policy_params)
  flat_warm = flat_params(warm["encoder"])
  flat_policy = flat_params(policy_params)
  # Every encoder-side leaf (embeddings and encoder layers) is the policy's; nothing else moved.
  assert any("encoder" in name for name in flat_warm) and len(flat_warm) > 4
  for name, value in flat_warm.items():
    np.testing.assert_array_equal(np.asarray(value), flat_policy[name])
    assert value.sharding == flat_params(fresh["encoder"])[name].sharding
  assert not any(name.startswith("decoder") for name in flat_warm)
  for part in set(fresh) - {"encoder"}:
    jax.tree_util.tree_map(np.testing.assert_array_equal, warm[part], fresh[part])
  wider = rm.init_params(dataclasses.replace(config, d_ff=2 * config.d_ff), 0, MESH2)
  with pytest.raises(ValueError, match=r"has shape .* in the policy, .* in the reward model"):
    rm.warm_start_encoder(wider, policy_params)
  deeper = rm.init_params(dataclasses.replace(config, num_encoder_layers=3), 0, MESH2)
  with pytest.raises(ValueError, match=r"the policy has no parameter"):
    rm.warm_start_encoder(deeper, policy_params)


def flat_params(tree):
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return traverse_util.flatten_dict(tree, sep="/")


def test_train_reward_model_script_warm_starts_from_a_policy(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  script = os.path.join(os.path.dirname(__file__), "..", "scripts", "train_reward_model.py")
  spec = importlib.util.spec_from_file_location("train_reward_model_script", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  model, policy_params, policy_dir = _saved_byte_policy(tmp_path)
  train_tsv = tmp_path / "train.tsv"
  train_tsv.write_text("".join(f"{s}\t{h}\t{y:.3f}\n" for s, h, y in overlap_rows(300, 0)))
  out = str(tmp_path / "reward_model")
  flags = [f"--train_tsv={train_tsv}", "--vocab=byte", "--steps=4", "--eval_every=2",
           "--batch_size=32", f"--max_source_len={MAX_LEN}", f"--max_hypothesis_len={MAX_LEN}",
           f"--output_dir={out}"]
  assert module.main(flags + [f"--init_encoder_from={policy_dir}"]) == 0
  config, _, _ = rm.load_reward_model(out)
  assert (config.d_model, config.num_encoder_layers, config.d_ff) == (
      model.config.d_model, model.config.num_encoder_layers, model.config.d_ff)
  with pytest.raises(SystemExit, match="takes the policy's architecture; drop --d_model"):
    module.main(flags + ["--overwrite", f"--init_encoder_from={policy_dir}", "--d_model=64"])
  with pytest.raises(SystemExit, match=r"trained with vocabulary 'byte', not --vocab=ding"):
    module.main(flags + ["--overwrite", f"--init_encoder_from={policy_dir}", "--vocab=ding"])
  with pytest.raises(SystemExit, match=r"--init_encoder_from='pretrained=nope' is invalid"):
    module.main(flags + ["--overwrite", "--init_encoder_from=pretrained=nope"])
