"""Train step: padding masks, learning a reverse task, validation loss, checkpoint round trip,
dropout-matched KL references and the trust-region reference refresh."""

import jax
import numpy as np
import pytest

import toy_setup
from rest_jax import batching, checkpointing, optim, train
from rest_jax.configs import OptimizerConfig
from rest_jax.losses import registry


def _bc_step(model, mesh, tx, shardings):
  spec = registry.get_loss("bc")
  return train.make_train_step(model, spec, registry.make_config("bc"), tx, shardings, mesh)


def test_padding_never_enters_the_loss():
  model = toy_setup.toy_model()
  mesh = toy_setup.mesh()
  _, _, state, shardings = toy_setup.factory_and_state(model, mesh)
  src, tgt = toy_setup.reverse_task(4, 6, seed=1)
  spec = registry.get_loss("bc")

  def loss(params, inputs, targets):
    batch = {"inputs": inputs, "targets": targets}
    li = train.build_loss_inputs(model, spec, params, state, batch, jax.random.PRNGKey(0), True)
    return spec.fn(li, {}, registry.make_config("bc"))[0]

  base = loss(state.params, src, tgt)
  # Extra padding columns on either side change nothing.
  padded = loss(state.params, np.pad(src, [(0, 0), (0, 3)]), np.pad(tgt, [(0, 0), (0, 2)]))
  np.testing.assert_allclose(base, padded, rtol=1e-5)


def test_learns_reverse_task_to_near_zero_loss():
  model = toy_setup.toy_model(d_model=64, num_heads=4, d_ff=128)
  mesh = toy_setup.mesh()
  opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=20, decay="constant")
  _, tx, state, shardings = toy_setup.factory_and_state(model, mesh, opt=opt)
  step = _bc_step(model, mesh, tx, shardings)
  src, tgt = toy_setup.reverse_task(20000, 6, seed=2, vocab=toy_setup.VOCAB)
  data = batching.SequenceData(list(src), list(tgt))
  losses = []
  for i, batch in batching.train_batches(data, 64, seed=0, start_step=0, num_steps=600,
                                         source_len=6, target_len=6):
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[:10]) > 2.0
  assert np.mean(losses[-20:]) < 0.05
  # Held-out validation loss agrees.
  val_src, val_tgt = toy_setup.reverse_task(128, 6, seed=99)
  evaluate = train.make_eval_step(model, mesh, shardings.params)
  totals = evaluate(state.params, {"inputs": val_src, "targets": val_tgt})
  assert float(totals["nll_sum"] / totals["num_tokens"]) < 0.1
  assert float(totals["num_correct"] / totals["num_tokens"]) > 0.97


def test_checkpoint_round_trip_is_exact(tmp_path):
  model = toy_setup.toy_model(value_head=True)
  mesh = toy_setup.mesh(data=2, model=2)
  factory, tx, state, shardings = toy_setup.factory_and_state(model, mesh)
  step = _bc_step(model, mesh, tx, shardings)
  src, tgt = toy_setup.reverse_task(8, 6)
  for i in range(3):
    state, _ = step(state, {"inputs": src, "targets": tgt}, jax.random.PRNGKey(i))
  state, shardings = factory.reset_optimizer(state, tx, frozen={"bc_params": state.params})
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(7, state, {"grow_step": 1, "round": 2})
  abstract, _ = factory.abstract_state(tx, frozen=("bc_params",))
  restored, meta = ckpt.restore(abstract)
  assert meta == {"grow_step": 1, "round": 2}
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
  assert ckpt.latest_step() == 7
  ckpt.close()


def test_restore_with_wrong_model_is_a_clear_error(tmp_path):
  mesh = toy_setup.mesh()
  factory, tx, state, _ = toy_setup.factory_and_state(toy_setup.toy_model(), mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(1, state, {})
  other = toy_setup.factory_and_state(toy_setup.toy_model(d_model=64, num_heads=4), mesh)[0]
  abstract, _ = other.abstract_state(tx)
  with pytest.raises(checkpointing.CheckpointError, match="does not match"):
    ckpt.restore(abstract)
  with pytest.raises(checkpointing.CheckpointError, match="available steps"):
    ckpt.restore(abstract, step=5)


def _bvmpo_setup(mesh, dropout_rate=0.0, trust_region_sync_every=0):
  """A toy policy with a value head, BVMPO's frozen copies and its own dual optimizer."""
  model = toy_setup.toy_model(value_head=True, dropout_rate=dropout_rate)
  spec = registry.get_loss("bvmpo")
  config = spec.for_phase(registry.make_config("bvmpo"), 20)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, decay="constant")
  tx = optim.with_dual_optimizer(optim.make_optimizer(opt), opt)
  factory, _, state, _ = toy_setup.factory_and_state(model, mesh)
  state, shardings = factory.start_phase(
      state.params, state.step, tx, spec.init_params(config),
      {"bc_params": state.params, "prev_params": state.params})
  step = train.make_train_step(model, spec, config, tx, shardings, mesh,
                               trust_region_sync_every=trust_region_sync_every)
  src, tgt = toy_setup.reverse_task(8, 6, seed=4)
  batch = {"inputs": src, "targets": tgt, "rewards": np.linspace(0, 1, 8).astype(np.float32)}
  return model, spec, state, step, batch


def test_kl_of_identical_policies_is_zero_with_dropout():
  """The KL references (BC prior, trust-region reference) share the policy pass's dropout key:
  identical parameters give KL 0, not a KL made of dropout noise."""
  mesh = toy_setup.mesh()
  model, spec, state, _, batch = _bvmpo_setup(mesh, dropout_rate=0.3)
  inputs = train.build_loss_inputs(model, spec, state.params, state, batch,
                                   jax.random.PRNGKey(3), deterministic=False)
  deterministic = model.apply({"params": state.params}, batch["inputs"], batch["targets"])
  assert np.abs(np.asarray(inputs.logits) - np.asarray(deterministic)).max() > 1e-3  # dropout on
  _, metrics = spec.fn(inputs, spec.init_params(registry.make_config("bvmpo")),
                       registry.make_config("bvmpo"))
  np.testing.assert_allclose(metrics["kl_prev"], 0.0, atol=1e-6)
  np.testing.assert_allclose(metrics["kl_bc"], 0.0, atol=1e-6)


def test_trust_region_reference_is_refreshed_every_k_steps():
  mesh = toy_setup.mesh(data=2)
  *_, state, step, batch = _bvmpo_setup(mesh, trust_region_sync_every=3)
  leaf = lambda params: np.asarray(jax.tree_util.tree_leaves(params)[0]).copy()
  start = leaf(state.params)
  policy_at = {}
  for i in range(5):
    policy_at[i] = leaf(state.params)  # The policy before step i.
    state, metrics = step(state, batch, jax.random.PRNGKey(i))
    # Steps 0..2 compare with the round's start; from step 3 on with the policy before step 3.
    expected = policy_at[3] if i >= 3 else start
    np.testing.assert_array_equal(leaf(state.prev_params), expected, err_msg=f"step {i}")
  assert not np.array_equal(policy_at[3], start)
  # With refresh off the reference stays at the round's start.
  *_, state, step, batch = _bvmpo_setup(mesh, trust_region_sync_every=0)
  for i in range(4):
    state, _ = step(state, batch, jax.random.PRNGKey(i))
  np.testing.assert_array_equal(leaf(state.prev_params), start)


@pytest.mark.parametrize("family", ["llama", "marian", "t5"])
@pytest.mark.parametrize("name", ["bc", "reward_weighted_nll", "gold_s", "bvmpo", "oac",
                                  "value_pretrain"])
def test_every_offline_loss_trains_a_pretrained_family_variant(name, family):
  """One train step of each Improve loss on the pretrained-family variants (a Llama-style
  decoder: RMSNorm, rotary, SwiGLU, grouped-query attention, untied output; a Marian-style
  post-norm encoder-decoder with biases; a T5-style one with relative position buckets) with a value head and the loss's frozen copies, as an
  Improve round builds them: a finite loss and a moved policy (or critic)."""
  mesh = toy_setup.mesh()
  if family == "llama":
    model = toy_setup.toy_model(decoder_only=True, value_head=True, **toy_setup.LLAMA_STYLE)
  else:
    model = toy_setup.toy_model(value_head=True, **(
        toy_setup.MARIAN_STYLE if family == "marian" else toy_setup.T5_STYLE))
  spec = registry.get_loss(name)
  config = spec.for_phase(registry.make_config(name), 20)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, decay="constant")
  tx = optim.make_optimizer(opt)
  if spec.init_params(config):
    tx = optim.with_dual_optimizer(tx, opt)
  factory, _, state, _ = toy_setup.factory_and_state(model, mesh)
  frozen = {}
  if spec.requires & {"bc_logits", "bc_token_logprobs"}:
    frozen["bc_params"] = state.params
  if "lagged_token_logprobs" in spec.requires:
    frozen["lagged_params"] = state.params
  if "prev_logits" in spec.requires:
    frozen["prev_params"] = state.params
  state, shardings = factory.start_phase(state.params, state.step, tx, spec.init_params(config),
                                         frozen)
  step = train.make_train_step(model, spec, config, tx, shardings, mesh)
  src, tgt = toy_setup.reverse_task(8, 6, seed=5)
  batch = {"inputs": src, "targets": tgt, "rewards": np.linspace(0, 1, 8).astype(np.float32)}
  before = jax.tree_util.tree_map(np.asarray, state.params)
  state, metrics = step(state, batch, jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics["loss"]))
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(b) - a).max()), before,
                                 state.params)
  changed = ("value_out" if name == "value_pretrain"
             else "embedding" if family == "marian" else "output")
  assert moved[changed] > 0, moved[changed]
