"""Sampler and beam search: log-probs, greedy/top-k/top-p/beam properties, determinism."""

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_setup
from rest_jax import sampling, sharding
from rest_jax.configs import BeamSearchConfig, SamplingConfig
from rest_jax.models import EOS_ID, PAD_ID, token_log_probs


# The pretrained-family variants (toy_setup.LLAMA_STYLE, MARIAN_STYLE, T5_STYLE) must sample
# exactly as the paper's policy does.
@pytest.fixture(scope="module", params=[(False, {}), (True, {}), (True, toy_setup.LLAMA_STYLE),
                                        (False, toy_setup.MARIAN_STYLE),
                                        (False, toy_setup.T5_STYLE)],
                ids=["encdec", "deconly", "deconly_llama", "encdec_marian", "encdec_t5"])
def setup(request):
  decoder_only, variant = request.param
  model = toy_setup.toy_model(decoder_only=decoder_only, **variant)
  mesh = toy_setup.mesh()
  _, _, state, shardings = toy_setup.factory_and_state(model, mesh)
  src = toy_setup.random_sources(4, 6, seed=3)
  return model, mesh, state.params, shardings.params, src


_SAMPLERS = {}


def _run(setup, rng=0, **kw):
  """Samples with a config; compiled samplers are reused across tests to save compile time."""
  model, mesh, params, pshard, src = setup
  cfg = SamplingConfig(**{"max_decode_len": 9, "num_samples": 3, **kw})
  key = (model.config, cfg)
  if key not in _SAMPLERS:
    _SAMPLERS[key] = sampling.make_sampler(model, cfg, mesh, pshard)
  return _SAMPLERS[key](params, src, jax.random.PRNGKey(rng))


def _teacher_forced_logits(setup, tokens_RxT, n):
  model, _, params, _, src = setup
  return model.apply({"params": params}, np.repeat(src, n, axis=0), tokens_RxT)


def test_sampled_logprobs_equal_teacher_forced(setup):
  out = _run(setup, temperature=0.8, top_k=3)
  tokens = np.asarray(out.tokens).reshape(-1, 9)
  logits = _teacher_forced_logits(setup, tokens, 3)
  mask = tokens != PAD_ID
  expected = np.asarray(token_log_probs(logits, tokens)) * mask
  np.testing.assert_allclose(np.asarray(out.token_logprobs).reshape(-1, 9), expected, atol=1e-5)
  # The sampling distribution (T=0.8, top-k=10) recomputed from the same logits.
  processed = sampling.process_logits(
      jnp.asarray(logits).reshape(-1, logits.shape[-1]),
      SamplingConfig(temperature=0.8, top_k=3)).reshape(logits.shape)
  expected_s = np.asarray(token_log_probs(processed, tokens)) * mask
  np.testing.assert_allclose(np.asarray(out.sample_logprobs).reshape(-1, 9), expected_s,
                             atol=1e-5)


def test_lengths_and_padding_after_eos(setup):
  out = _run(setup, temperature=0.8, top_k=3)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for row, n in zip(tokens.reshape(-1, 9), lengths.reshape(-1)):
    eos = np.where(row == EOS_ID)[0]
    if len(eos):
      assert n == eos[0] + 1 and np.all(row[n:] == PAD_ID)
    else:
      assert n == 9
    assert np.all(row[:n] != PAD_ID)


def test_deterministic_for_a_key_and_different_across_keys(setup):
  kw = dict(temperature=0.8, top_k=3)
  a, b, c = _run(setup, rng=1, **kw), _run(setup, rng=1, **kw), _run(setup, rng=2, **kw)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)


def test_greedy_equals_argmax_of_teacher_forced(setup):
  out = _run(setup, temperature=0.0, num_samples=2)
  tokens = np.asarray(out.tokens)
  np.testing.assert_array_equal(tokens[:, 0], tokens[:, 1])  # Greedy ignores the key.
  rows = tokens.reshape(-1, 9)
  logits = np.array(_teacher_forced_logits(setup, rows, 2))
  logits[..., PAD_ID] = -np.inf
  mask = rows != PAD_ID
  np.testing.assert_array_equal(np.argmax(logits, -1)[mask], rows[mask])


def test_top_k_never_leaves_the_top_k(setup):
  k = 3
  out = _run(setup, temperature=0.8, top_k=k)
  rows = np.asarray(out.tokens).reshape(-1, 9)
  logits = np.array(_teacher_forced_logits(setup, rows, 3))
  logits[..., PAD_ID] = -np.inf
  kth = np.sort(logits, -1)[..., -k]
  chosen = np.take_along_axis(logits, rows[..., None], -1)[..., 0]
  mask = rows != PAD_ID
  assert np.all(chosen[mask] >= kth[mask] - 1e-6)


@pytest.mark.parametrize("k", [1, 2, 7, 40, 63, 64])
def test_kth_largest_matches_lax_top_k(k):
  rng = np.random.RandomState(k)
  x = (rng.standard_normal((16, 64)) * 10.0 ** rng.randint(-3, 4, (16, 1))).astype(np.float32)
  x[0] = 0.0  # all tied
  x[1, ::2] = x[1, 1::2]  # every value twice
  x[2, :5] = -np.inf
  x[3, :] = np.round(x[3, :])  # many ties across the range
  x[4, 0], x[4, 1] = -0.0, 0.0
  x[5] = -np.abs(x[5])  # all negative
  x[6, 3] = np.float32(-1e9)  # the sampler's NEG_INF mask value
  x[7] = np.float32(3e38) * np.sign(x[7])  # near the float32 limits
  got = np.asarray(jax.jit(sampling.kth_largest, static_argnums=1)(x, k))
  want = np.asarray(jax.lax.top_k(x, k)[0][:, -1:])
  np.testing.assert_array_equal(got, want)
  # The threshold keeps at least k entries per row, and exactly k where the values are distinct.
  kept = (x >= got).sum(-1)
  assert np.all(kept >= k)
  distinct = [len(np.unique(row)) == len(row) for row in x]
  assert np.all(kept[distinct] == k)


def test_top_k_benchmark_script_runs_and_checks_agreement(capsys):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "benchmark_top_k.py")
  spec = importlib.util.spec_from_file_location("benchmark_top_k", path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  script.main(script.parse_args(["--shapes=8x16,4x300", "--k=3", "--repeats=1"]))
  out = capsys.readouterr().out
  assert "8 x 16: ours" in out and "4 x 300: ours" in out and out.count("thresholds equal") == 2
  with pytest.raises(SystemExit):
    script.parse_args(["--shapes=8x16", "--k=17"])  # k above the vocabulary


def test_top_p_keeps_the_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.9, 0.03, 0.02]]))
  logits = jnp.concatenate([jnp.full((2, 1), -5.0), logits], axis=1)  # Column 0 is PAD.
  processed = sampling.process_logits(logits, SamplingConfig(temperature=1.0, top_p=0.7))
  kept = np.asarray(processed > -1e9)
  np.testing.assert_array_equal(kept, [[0, 1, 1, 0, 0], [0, 0, 1, 0, 0]])


def test_top_p_samples_stay_in_nucleus(setup):
  out = _run(setup, temperature=1.0, top_p=0.5, num_samples=4)
  rows = np.asarray(out.tokens).reshape(-1, 9)
  logits = np.array(_teacher_forced_logits(setup, rows, 4))
  logits[..., PAD_ID] = -np.inf
  probs = jax.nn.softmax(jnp.asarray(logits), -1)
  chosen = np.take_along_axis(np.asarray(probs), rows[..., None], -1)[..., 0]
  mass_above = (np.asarray(probs) * (np.asarray(probs) > chosen[..., None])).sum(-1)
  mask = rows != PAD_ID
  assert np.all(mass_above[mask] < 0.5 + 1e-5)


def test_beam_search_finds_the_best_sequence_of_a_tiny_space(setup):
  model, mesh, params, pshard, src = setup
  cfg = BeamSearchConfig(max_decode_len=3, beam_size=4, length_penalty=0.0)
  out = sampling.make_beam_search(model, cfg, mesh, pshard)(params, src)
  scores = np.asarray(out.scores)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)  # Best first.
  # Score equals the teacher-forced log-prob of the returned sequence (alpha=0).
  best = np.asarray(out.tokens)[:, 0]
  logits = model.apply({"params": params}, src, best)
  lp = np.asarray(token_log_probs(logits, best)) * (best != PAD_ID)
  np.testing.assert_allclose(lp.sum(-1), scores[:, 0], atol=1e-4)
  # With 3 steps the beam result cannot be worse than greedy.
  greedy = sampling.make_sampler(model, SamplingConfig(max_decode_len=3, temperature=0.0),
                                 mesh, pshard)(params, src, jax.random.PRNGKey(0))
  g_tokens = np.asarray(greedy.tokens)[:, 0]
  g_lp = (np.asarray(greedy.token_logprobs)[:, 0]).sum(-1)
  finished = (g_tokens == EOS_ID).any(-1)
  assert np.all(scores[finished, 0] >= g_lp[finished] - 1e-4)


def test_per_source_keys_make_samples_independent_of_batch_layout(setup):
  """With one key per source, a source's samples do not depend on its batch neighbours."""
  model, mesh, params, pshard, src = setup
  cfg = SamplingConfig(max_decode_len=9, num_samples=3, temperature=1.0)
  sampler = sampling.make_sampler(model, cfg, mesh, pshard)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(7), jnp.arange(4))
  full = sampler(params, src, keys)
  order = np.array([2, 0, 3, 1])
  permuted = sampler(params, src[order], keys[order])
  np.testing.assert_array_equal(np.asarray(permuted.tokens), np.asarray(full.tokens)[order])


@pytest.mark.parametrize("vocab", [7, 10])  # 7 needs padding to whole blocks, 10 does not.
def test_two_stage_categorical_draws_from_the_softmax(vocab):
  logits = jnp.asarray(np.random.RandomState(vocab).randn(1, vocab) * 1.5, jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 100_000)
  draw = jax.jit(jax.vmap(lambda k: sampling.sample_categorical(k, logits)[0][0]))
  counts = np.bincount(np.asarray(draw(keys)), minlength=vocab) / len(keys)
  expected = np.asarray(jax.nn.softmax(logits[0]))
  np.testing.assert_allclose(counts, expected, atol=0.006)
  _, log_normaliser = sampling.sample_categorical(keys[0], logits)
  np.testing.assert_allclose(log_normaliser, jax.nn.logsumexp(logits, -1), rtol=1e-6)
