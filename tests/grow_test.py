"""Grow on a toy policy: what a grown record stores.

Behaviour log-probs must be those of the distribution the sample was drawn from (temperature,
top-k, top-p), not the policy's at temperature 1; truncated samples (no EOS within
max_decode_len) are stored, zero-rewarded or dropped as `GrowConfig.truncated_samples` says.
"""

import types

import jax
import numpy as np
import pytest

import toy_setup
from rest_jax import batching, grow, grown_data, sampling
from rest_jax.models import EOS_ID
from rest_jax.rewards import base as reward_base

SOURCE_LEN = 8


class _Vocab:
  def decode(self, ids):
    return " ".join(str(i) for i in ids)


class _LengthReward(reward_base.Reward):
  """Reference-free and never 0, so a 0 in the grown data can only come from Grow."""
  name = "length"

  def score(self, sources, hypotheses, references=None):
    return np.array([min(1.0, (len(h.split()) + 1) / 20) for h in hypotheses], np.float32)


@pytest.fixture(scope="module")
def policy():
  model = toy_setup.toy_model()
  mesh = toy_setup.mesh()
  _, _, state, shardings = toy_setup.factory_and_state(model, mesh, seed=5)
  sources = toy_setup.random_sources(6, SOURCE_LEN, seed=6)
  examples = [types.SimpleNamespace(
      source_id=i, source=f"source {i}", reference=f"reference {i}",
      inputs=row[row != 0], targets=np.array([5, 6, EOS_ID], np.int32))
              for i, row in enumerate(sources)]
  return model, mesh, state.params, shardings.params, examples


def _grow(policy, tmp_path, **overrides):
  model, mesh, params, param_shardings, examples = policy
  fields = dict(num_samples=8, temperature=0.7, top_k=8, top_p=0.9, max_decode_len=5,
                batch_size=4, sources_per_shard=4, seed=1)
  config = grow.GrowConfig(**{**fields, **overrides})
  sampler = sampling.make_sampler(model, config.sampling_config(), mesh, param_shardings)
  store = grown_data.GrowStore(str(tmp_path / config.truncated_samples), 1)
  summary = grow.grow(1, params, 0, examples, sampler, _Vocab(), _LengthReward(), store, config,
                      mesh, SOURCE_LEN)
  return config, summary, store.read_all()


def _teacher_forced_logits(policy, records):
  model, _, params, _, examples = policy
  by_id = {ex.source_id: ex for ex in examples}
  inputs = batching.pad_rows([by_id[i].inputs for i in records.source_id], SOURCE_LEN)
  targets = batching.pad_rows(records.sample_tokens, 8)
  return np.asarray(model.apply({"params": params}, inputs, targets))


def test_behaviour_logprobs_are_the_sampling_distributions(policy, tmp_path):
  config, _, records = _grow(policy, tmp_path, truncated_samples="keep")
  samples = records.select(~records.is_original)
  logits = _teacher_forced_logits(policy, samples)
  sampling_config = config.sampling_config()
  checked = differs = 0
  for row, (tokens, stored) in enumerate(zip(samples.sample_tokens, samples.behaviour_logprobs)):
    assert stored.shape == tokens.shape
    processed = sampling.process_logits(logits[row, :len(tokens)], sampling_config)
    expected = np.asarray(jax.nn.log_softmax(processed))[np.arange(len(tokens)), tokens]
    np.testing.assert_allclose(stored, expected, atol=1e-4, err_msg=f"sample {row}")
    at_t1 = np.asarray(jax.nn.log_softmax(logits[row, :len(tokens)]))[
        np.arange(len(tokens)), tokens]
    differs += int(np.abs(at_t1 - stored).max() > 1e-2)
    checked += 1
  assert checked == 6 * 8 and differs == checked  # T=0.7, top-k, top-p: never the T=1 values.
  # No policy sampled the references: their behaviour log-probs are unknown, stored as zeros.
  for lps in records.select(records.is_original).behaviour_logprobs:
    np.testing.assert_array_equal(lps, 0.0)


def test_truncated_samples_follow_the_option(policy, tmp_path):
  results = {option: _grow(policy, tmp_path, truncated_samples=option, temperature=2.0,
                           top_k=0, top_p=1.0)
             for option in grow.TRUNCATED_SAMPLES}
  _, summary, kept = results["keep"]
  kept = kept.select(~kept.is_original)
  finished = np.array([t[-1] == EOS_ID for t in kept.sample_tokens])
  assert 0 < finished.sum() < len(finished)  # The toy policy produces both kinds.
  assert summary.num_truncated == int((~finished).sum())
  assert np.all(kept.reward > 0)  # 'keep' scores a cut sample as if it were finished.
  assert all(len(t) == 5 for t in np.array(kept.sample_tokens, dtype=object)[~finished])

  _, _, zeroed = results["zero_reward"]
  zeroed = zeroed.select(~zeroed.is_original)
  np.testing.assert_array_equal(zeroed.sample_index, kept.sample_index)
  np.testing.assert_array_equal(zeroed.reward[~finished], 0.0)
  np.testing.assert_array_equal(zeroed.reward[finished], kept.reward[finished])

  _, _, dropped = results["drop"]
  assert dropped.is_original.sum() == 6  # Every reference stays.
  dropped = dropped.select(~dropped.is_original)
  assert len(dropped) == int(finished.sum())
  np.testing.assert_array_equal(dropped.reward, kept.reward[finished])


def test_truncated_samples_option_is_validated():
  with pytest.raises(ValueError, match=r"GrowConfig.truncated_samples='penalise' is invalid.*"
                     r"allowed: \('zero_reward', 'drop', 'keep'\)"):
    grow.GrowConfig(truncated_samples="penalise")


def test_default_handles_truncated_samples_and_names_toy_defaults():
  assert grow.GrowConfig().truncated_samples == "zero_reward"
  doc = grow.GrowConfig.__doc__
  assert "Toy defaults" in doc and "N=100" in doc and "128 tokens" in doc


def test_shards_record_their_wall_time(policy, tmp_path):
  """Each shard stores its sampling-and-scoring seconds; the Grow step's time is their sum, with
  shards that processes write side by side counted once (the slowest), and unknown (None) when
  a shard predates the field."""
  config, summary, records = _grow(policy, tmp_path, truncated_samples="keep")
  store = grown_data.GrowStore(str(tmp_path / "keep"), 1)
  assert summary.num_shards == 2
  assert store.wall_seconds() > 0

  fake = grown_data.GrowStore(str(tmp_path / "fake"), 1)
  fake.ensure_manifest({"num_shards": 4, "processes": 2})
  for index, seconds in enumerate([1.0, 3.0, 5.0, 2.0]):  # Rounds (0, 1) and (2, 3).
    fake.write_shard(index, 4, records, wall_s=seconds)
  assert fake.wall_seconds() == pytest.approx(3.0 + 5.0)
  assert not any("wall" in name for name in np.load(fake.shard_path(0, 4)).files)
  older = grown_data.GrowStore(str(tmp_path / "older"), 1)
  older.ensure_manifest({"num_shards": 2, "processes": 1})
  older.write_shard(0, 2, records, wall_s=1.0)
  older.write_shard(1, 2, records)  # Without a time: the step's total is unknown.
  assert older.wall_seconds() is None
  assert grown_data.GrowStore(str(tmp_path / "empty"), 1).wall_seconds() is None
