"""8 fake devices (data x fsdp x model meshes) give the same numbers as 1 device."""

import jax
import numpy as np
import pytest

import toy_setup
from rest_jax import sampling, sharding, train
from rest_jax.configs import MeshConfig, SamplingConfig
from rest_jax.losses import registry

MESHES = {"1dev": (1, 1, 1), "data4_model2": (4, 1, 2), "data2_fsdp2_model2": (2, 2, 2)}


def _train_and_sample(mesh_shape, decoder_only=False, **variant):
  # d_model/heads/mlp/vocab divisible by 2 so the model axis really splits the parameters.
  model = toy_setup.toy_model(decoder_only=decoder_only, **variant)
  mesh = toy_setup.mesh(*mesh_shape)
  _, tx, state, shardings = toy_setup.factory_and_state(model, mesh, seed=0)
  spec = registry.get_loss("bc")
  step = train.make_train_step(model, spec, registry.make_config("bc"), tx, shardings, mesh,
                               dropout=False)
  src, tgt = toy_setup.reverse_task(16, 6, seed=4)
  metrics = []
  for i in range(3):
    batch = sharding.shard_batch({"inputs": src, "targets": tgt}, mesh)
    state, m = step(state, batch, jax.random.PRNGKey(i))
    metrics.append(float(m["loss"]))
  sampler = sampling.make_sampler(
      model, SamplingConfig(max_decode_len=7, temperature=0.9, num_samples=2), mesh,
      shardings.params)
  out = sampler(state.params, sharding.shard_batch(src[:8], mesh), jax.random.PRNGKey(5))
  return state, metrics, out


@pytest.fixture(scope="module")
def single_device():
  return _train_and_sample(MESHES["1dev"])


@pytest.mark.parametrize("name", ["data4_model2", "data2_fsdp2_model2"])
def test_sharded_train_step_and_sampler_match_one_device(single_device, name):
  state1, metrics1, out1 = single_device
  state8, metrics8, out8 = _train_and_sample(MESHES[name])
  wi = state8.params["decoder_0"]["mlp"]["wi"]
  assert len(wi.sharding.device_set) == 8  # Really distributed.
  assert not wi.sharding.is_fully_replicated
  np.testing.assert_allclose(metrics1, metrics8, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(state1.params), jax.tree_util.tree_leaves(state8.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4)
  np.testing.assert_array_equal(np.asarray(out1.tokens), np.asarray(out8.tokens))
  np.testing.assert_allclose(np.asarray(out1.token_logprobs), np.asarray(out8.token_logprobs),
                             atol=1e-4)


def test_llama_style_decoder_sharded_matches_one_device():
  """Grouped-query attention (2 key/value heads split over the model axis), rotary positions,
  SwiGLU and an untied output: the sharded train step and sampler give one device's numbers."""
  variant = toy_setup.LLAMA_STYLE
  state1, metrics1, out1 = _train_and_sample(MESHES["1dev"], True, **variant)
  state8, metrics8, out8 = _train_and_sample(MESHES["data4_model2"], True, **variant)
  key = state8.params["decoder_0"]["self_attention"]["key"]
  assert key.shape[1] == 2 and not key.sharding.is_fully_replicated
  np.testing.assert_allclose(metrics1, metrics8, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out1.tokens), np.asarray(out8.tokens))
  np.testing.assert_allclose(np.asarray(out1.token_logprobs), np.asarray(out8.token_logprobs),
                             atol=1e-4)


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_seq2seq_variants_sharded_match_one_device(family):
  """Marian-style (post-norm, biases everywhere, logits bias) and T5-style (relative-position
  tables with a replicated bucket axis) encoder-decoders: the sharded train step and sampler
  give one device's numbers on 8 fake devices."""
  variant = toy_setup.MARIAN_STYLE if family == "marian" else toy_setup.T5_STYLE
  state1, metrics1, out1 = _train_and_sample(MESHES["1dev"], False, **variant)
  state8, metrics8, out8 = _train_and_sample(MESHES["data4_model2"], False, **variant)
  np.testing.assert_allclose(metrics1, metrics8, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out1.tokens), np.asarray(out8.tokens))
  np.testing.assert_allclose(np.asarray(out1.token_logprobs), np.asarray(out8.token_logprobs),
                             atol=1e-4)


def test_sampler_reads_the_training_state_in_place():
  """Sampler parameter shardings are the train state's: no re-shard between Grow and Improve."""
  model = toy_setup.toy_model()
  mesh = toy_setup.mesh(4, 1, 2)
  _, _, state, shardings = toy_setup.factory_and_state(model, mesh)
  sampler = sampling.make_sampler(model, SamplingConfig(max_decode_len=4), mesh, shardings.params)
  lowered = sampler.lower(state.params, sharding.shard_batch(toy_setup.random_sources(8, 5), mesh),
                          jax.random.PRNGKey(0))
  in_shardings = lowered.compile().input_shardings[0][0]
  for expected, actual in zip(jax.tree_util.tree_leaves(shardings.params),
                              jax.tree_util.tree_leaves(in_shardings)):
    assert expected.is_equivalent_to(actual, 2) or expected.spec == actual.spec


def test_mesh_config_errors_name_the_problem():
  with pytest.raises(ValueError, match="MeshConfig.data"):
    MeshConfig(data=0)
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    MeshConfig(data=-1, model=-1)
  with pytest.raises(ValueError, match="8 devices"):
    sharding.make_mesh(MeshConfig(data=3, fsdp=1, model=1))
  with pytest.raises(ValueError, match="mesh axes are"):
    MeshConfig(rules=(("embed", "tensor"),))


def test_batch_not_divisible_by_data_shards_is_rejected():
  mesh = toy_setup.mesh(4, 1, 2)
  with pytest.raises(ValueError, match="not divisible"):
    sharding.shard_batch({"inputs": np.zeros((6, 3), np.int32)}, mesh)
