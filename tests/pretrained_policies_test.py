"""Starting a ReST run from a saved policy: export, resolve, compatibility checks, the BC row."""

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest

from rest_jax import checkpointing, pretrained_policies
from rest_jax.rewards import reward_model_training
from tests.rest_loop_test import run_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny BC workdir and its export (bfloat16) under a temporary pretrained root."""
  workdir = tmp_path_factory.mktemp("bc")
  run_experiment(workdir, "rest_loop.run.stop_after_phase = 'bc'")
  root = tmp_path_factory.mktemp("pretrained")
  load_script("export_pretrained_policy").main(
      [f"--workdir={workdir}", "--name=tiny", f"--output_root={root}", "--command=tiny test"])
  return workdir, os.path.join(root, "tiny")


def test_export_writes_bfloat16_params_meta_and_model_card(exported):
  workdir, out = exported
  step, meta = pretrained_policies.read_meta(out)
  assert step == 0 and meta["kind"] == "policy" and meta["exported_dtype"] == "bfloat16"
  assert meta["fingerprint"]["task"] == "ding_de_en"
  card = open(os.path.join(out, "MODEL_CARD.md"), encoding="utf-8").read()
  assert "`tiny test`" in card and "| validation |" in card and "SHA-256" in card
  original = reward_model_training.load_policy_for_sampling(os.path.join(workdir,
                                                                          "checkpoints_bc"))
  shipped = reward_model_training.load_policy_for_sampling(out)
  for a, b in zip(jax_leaves(original.params), jax_leaves(shipped.params)):
    assert b.dtype == np.float32  # Cast back to the model's dtype on load.
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # bfloat16 rounding only.


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_run_starts_from_the_exported_policy_and_reports_it_as_bc(exported, tmp_path):
  _, out = exported
  rows = run_experiment(tmp_path, f"rest_loop.run.init_policy = '{out}'",
                        "rest_loop.run.stop_after_phase = 'grow1'")
  bc_rows = [r for r in rows if r["run"] == "G0I0"]
  assert {r["split"] for r in bc_rows} == {"validation", "test"}
  assert all(r["loss"] == "pretrained" for r in bc_rows)
  meta = checkpointing.Checkpointer(str(tmp_path / "checkpoints_bc")).restore_meta()
  assert meta["init_policy"] == out
  # The BC checkpoint holds exactly the exported parameters (as float32).
  started = reward_model_training.load_policy_for_sampling(str(tmp_path / "checkpoints_bc"))
  shipped = reward_model_training.load_policy_for_sampling(out)
  for a, b in zip(jax_leaves(started.params), jax_leaves(shipped.params)):
    np.testing.assert_array_equal(a, b)
  with open(tmp_path / "results.jsonl", encoding="utf-8") as f:
    assert sum(json.loads(line)["run"] == "G0I0" for line in f if line.strip()) == 2


def test_a_workdir_resolves_to_its_bc_checkpoints(exported):
  workdir, _ = exported
  assert pretrained_policies.resolve(str(workdir)) == os.path.join(str(workdir),
                                                                   "checkpoints_bc")


@pytest.mark.parametrize("spec, message", [
    ("pretrained=nope", "no shipped policy 'nope'"),
    ("/does/not/exist", "no such directory"),
    ("", "expected 'pretrained=NAME'"),
])
def test_bad_specs_name_the_field(spec, message):
  with pytest.raises(ValueError, match="run.init_policy") as e:
    pretrained_policies.resolve(spec)
  assert message in str(e.value)


def test_a_different_model_is_refused_before_data_loads(exported, tmp_path, monkeypatch):
  _, out = exported
  from rest_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  loaded = []
  original = pipeline.load_examples
  monkeypatch.setattr(pipeline, "load_examples",
                      lambda *a, **k: loaded.append(a) or original(*a, **k))
  with pytest.raises(ValueError, match=r"different model: d_model=32 \(run: 48\)"):
    run_experiment(tmp_path, f"rest_loop.run.init_policy = '{out}'",
                   "rest_loop.run.model_overrides = {'d_model': 48}")
  assert not loaded


def test_a_policy_of_another_vocabulary_is_refused(exported, tmp_path):
  _, out = exported
  with pytest.raises(ValueError, match="vocabulary differs"):
    pretrained_policies.check_compatible(
        out, pretrained_policies.read_meta(out)[1],
        reward_model_training.load_policy_for_sampling(out).model.config,
        lambda task: False)


def test_shipped_policies_are_listed_and_loadable():
  for name in pretrained_policies.pretrained_policies():
    step, meta = pretrained_policies.read_meta(pretrained_policies.resolve(f"pretrained={name}"))
    assert meta["kind"] == "policy" and "model" in meta["fingerprint"], name
    assert os.path.exists(os.path.join(pretrained_policies.PRETRAINED_DIR, name, "MODEL_CARD.md"))


def test_finetune_mode_trains_bc_from_the_saved_policy(exported, tmp_path):
  _, out = exported
  rows = run_experiment(tmp_path, f"rest_loop.run.init_policy = '{out}'",
                        "rest_loop.run.init_policy_mode = 'finetune'",
                        "rest_loop.run.stop_after_phase = 'bc'")
  assert {r["loss"] for r in rows if r["run"] == "G0I0"} == {"bc"}
  trained = reward_model_training.load_policy_for_sampling(str(tmp_path / "checkpoints_bc"))
  shipped = reward_model_training.load_policy_for_sampling(out)
  # The first training step starts from the shipped weights: close to them, not equal, and far
  # closer than a fresh initialisation would be.
  diffs = [np.abs(a - b).max() for a, b in zip(jax_leaves(trained.params),
                                               jax_leaves(shipped.params))]
  assert 0 < max(diffs) < 0.5


def test_unknown_init_policy_mode_is_refused(tmp_path):
  with pytest.raises(ValueError, match="init_policy_mode='warm'"):
    run_experiment(tmp_path, "rest_loop.run.init_policy_mode = 'warm'")


def test_shipped_policy_saved_before_the_variant_fields_still_loads():
  """A policy whose metadata predates ModelConfig's architecture-variant fields (as de_en_small
  was first shipped): they take their defaults, so it matches the paper-style model and refuses
  an RMSNorm one by name."""
  import copy  # pylint: disable=g-import-not-at-top
  from rest_jax import configs  # pylint: disable=g-import-not-at-top
  from rest_jax.models import model_config  # pylint: disable=g-import-not-at-top
  directory = pretrained_policies.resolve("pretrained=de_en_small")
  _, meta = pretrained_policies.read_meta(directory)
  meta = copy.deepcopy(meta)
  first_fields = ("vocab_size", "d_model", "num_heads", "d_ff", "num_encoder_layers",
                  "num_decoder_layers", "head_dim", "max_len", "decoder_only", "value_head",
                  "value_stop_gradient", "activation", "dropout_rate", "dtype", "param_dtype",
                  "layer_norm_epsilon")
  saved = meta["fingerprint"]["model"]
  meta["fingerprint"]["model"] = {k: saved[k] for k in first_fields if k in saved}
  assert set(configs.model_config_dict(meta["fingerprint"]["model"])) == {
      f.name for f in dataclasses.fields(configs.ModelConfig)}
  config = model_config("small", 8000, value_head=True, dropout_rate=saved["dropout_rate"])
  pretrained_policies.check_compatible(directory, meta, config, lambda task: True)
  with pytest.raises(ValueError, match=r"norm='layernorm' \(run: 'rmsnorm'\)"):
    pretrained_policies.check_compatible(directory, meta, config.replace(norm="rmsnorm"),
                                         lambda task: True)
