"""BC train step: padding masks, learning a reverse task, validation loss, checkpoint round trip."""

import jax
import numpy as np
import pytest

import toy_setup
from rest_jax import batching, checkpointing, train
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
