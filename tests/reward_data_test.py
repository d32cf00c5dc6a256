"""Corruptions of a reference and scripts/make_reward_data.py, on toy inputs.

Each corruption must do what its name says and be reproducible, because the same functions
make the negatives a reward model trains on and the probes that check it. The data script is
run in-process on a 6-pair TSV with two toy policies (random parameters, byte vocabulary), the
reference and corruptions, and its rows, labels, counts and summary are checked. Everything is
written under tmp_path.
"""

import collections
import dataclasses
import hashlib
import importlib.util
import json
import os
import random
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from rest_jax import checkpointing, train_state
from rest_jax.rewards import base, corruptions, registry
from rest_jax.rewards import reward_data as rd
import toy_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = [("Das ist gut.", "That is good."),
         ("Die Datei wurde nicht gefunden.", "The file was not found."),
         ("Abbrechen", "Cancel"),
         ("Ich stieß auf ihre Arbeit in dem neuen Buch.", "I came across your work in this book."),
         ("Speicher voll", "Out of memory"),
         ("Er kam gestern spät nach Hause.", "He came home late yesterday.")]
SOURCES = [s for s, _ in PAIRS]
REFERENCES = [r for _, r in PAIRS]


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


make_reward_data = load_script("make_reward_data")


def corrupt(kind, index, seed=0, pairs=PAIRS):
  source, reference = pairs[index]
  return corruptions.corrupt(kind, source, reference,
                             corruptions.source_rng(seed, kind, index), [r for _, r in pairs])


# ------------------------------------------------------------------------------ corruptions
@pytest.mark.parametrize("kind", corruptions.KINDS)
def test_each_corruption_is_deterministic_and_never_the_reference(kind):
  outputs = [corrupt(kind, i) for i in range(len(PAIRS))]
  assert outputs == [corrupt(kind, i) for i in range(len(PAIRS))]
  for text, reference in zip(outputs, REFERENCES):
    assert text is None or (text and text != reference and text == " ".join(text.split()))
  assert sum(text is not None for text in outputs) >= 4  # Only one-word limits apply.


def test_repeat_ngram_repeats_a_word_ngram_three_to_five_times():
  for i, reference in enumerate(REFERENCES):
    words, out = reference.split(), corrupt("repeat_ngram", i).split()
    found = [(n, start, k) for n in (1, 2, 3) for start in range(len(words) - n + 1)
             for k in (3, 4, 5)
             if out == words[:start] + words[start:start + n] * k + words[start + n:]]
    assert found, (reference, out)


def test_repeat_sentence_truncate_copy_source_and_near_empty():
  for i, (source, reference) in enumerate(PAIRS):
    assert corrupt("repeat_sentence", i) == f"{reference} {reference}"
    assert corrupt("copy_source", i) == source
    near = corrupt("near_empty", i)
    assert len(near.split()) == 1 and len(near) <= 3 and near != reference
    words, cut = reference.split(), corrupt("truncate", i)
    if len(words) < 2:
      assert cut is None
      continue
    kept = cut.split()
    assert kept == words[:len(kept)] and 1 <= len(kept) < len(words)  # A strict prefix.
    assert 0.3 * len(words) - 0.5 <= len(kept) <= 0.7 * len(words) + 0.5
  assert corruptions.copy_source("Python", "Python", random.Random(0)) is None


def test_shuffle_keeps_the_words_in_another_order():
  for i, reference in enumerate(REFERENCES):
    out = corrupt("shuffle_words", i)
    if len(set(reference.split())) < 2:
      assert out is None
      continue
    assert collections.Counter(out.split()) == collections.Counter(reference.split())
    assert out.split() != reference.split()
  assert corruptions.shuffle_words("", "ja ja", random.Random(0)) is None


def test_other_reference_comes_from_the_pool_and_differs():
  for i, reference in enumerate(REFERENCES):
    out = corrupt("other_reference", i)
    assert out in REFERENCES and out != reference
  assert corruptions.other_reference("x", "Cancel", random.Random(0), ["Cancel"] * 3) is None
  assert corruptions.other_reference("x", "Cancel", random.Random(0), []) is None


def test_runaway_chars_repeats_one_letter_inside_or_at_the_end_of_a_word():
  positions = set()
  for seed in range(10):
    for i, reference in enumerate(REFERENCES):
      out = corrupt("runaway_chars", i, seed=seed)
      run = re.search(r"([^\W\d_])\1{7,}", out)
      assert run and len(run.group(0)) <= 17, out  # 8-16 copies, + a doubled letter ("ss").
      assert len(out.split()) == len(reference.split())
      assert any(out[:run.start()] + run.group(1) * m + out[run.end():] == reference
                 for m in (1, 2)), out
      word_end = run.end() == len(out) or not out[run.end()].isalpha()
      positions.add("end" if word_end else "inside")
  assert positions == {"end", "inside"}


def test_bad_kinds_list_the_valid_ones():
  assert corruptions.parse_kinds("truncate, near_empty,truncate") == ("truncate", "near_empty")
  with pytest.raises(ValueError, match=r"\['repeat_ngram', 'repeat_sentence'.*near_empty"):
    corruptions.parse_kinds("truncate,typo")
  with pytest.raises(ValueError, match="unknown corruption kind 'typo'"):
    corruptions.corrupt("typo", "a", "b", random.Random(0))


# ----------------------------------------------------------------------------- data parts
def test_rates_give_exact_counts_for_whole_numbers_and_the_mean_otherwise():
  refs = [f"word{i} and more words here" for i in range(400)]
  srcs = [f"Wort{i} und mehr" for i in range(400)]
  assert all(len(h) == 1 for h in rd.reference_hypotheses(refs, 1.0, seed=0))
  assert not any(rd.reference_hypotheses(refs, 0.0, seed=0)[0])
  half = sum(len(h) for h in rd.reference_hypotheses(refs, 0.5, seed=0))
  assert 160 < half < 240
  two = rd.corruption_hypotheses(srcs, refs, 2.0, corruptions.KINDS, seed=0)
  assert all(len(h) == 2 and h[0].origin != h[1].origin for h in two)
  mixed = sum(len(h) for h in rd.corruption_hypotheses(srcs, refs, 1.5, corruptions.KINDS, 0))
  assert 520 < mixed < 680
  kinds = collections.Counter(h.origin for row in two for h in row)
  assert set(kinds) == {rd.CORRUPTION_PREFIX + k for k in corruptions.KINDS}


def test_corruption_label_flag():
  assert rd.parse_corruption_label("0.1")(0.9) == pytest.approx(0.1)
  capped = rd.parse_corruption_label("cap:0.3")
  assert capped(0.9) == pytest.approx(0.3) and capped(0.2) == pytest.approx(0.2)
  for bad in ("1.5", "cap:x", "max:0.2", "nan"):
    with pytest.raises(ValueError, match=r"--corruption_label=.*'cap:X'"):
      rd.parse_corruption_label(bad)


# ------------------------------------------------------------------------- the data script
def save_toy_policy(directory, seed, step):
  """A random-parameter toy policy checkpoint (byte vocabulary): samples are random bytes."""
  model = toy_setup.toy_model(vocab=259)
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                                  nn.meta.unbox(train_state.abstract_boxed_params(model)))
  ckpt = checkpointing.Checkpointer(str(directory))
  ckpt.save(step, params, {"model_config": dataclasses.asdict(model.config),
                           "vocabulary": "byte"})
  ckpt.close()
  return str(directory)


@pytest.fixture(scope="module")
def toy_inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("reward_data")
  tsv = root / "pairs.tsv"
  tsv.write_text("".join(f"{s}\t{r}\n" for s, r in PAIRS), encoding="utf-8")
  weak = save_toy_policy(root / "weak", seed=1, step=100)
  strong = save_toy_policy(root / "strong", seed=2, step=200)
  return str(tsv), weak, os.path.join(strong, "200")  # The second as a step directory.


def read_rows(path):
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]


def run_script(tmp_path, toy_inputs, name, *flags):
  tsv, weak, strong = toy_inputs
  out = str(tmp_path / name)
  assert make_reward_data.main([f"--tsv={tsv}", f"--policy={weak}", f"--policy={strong}",
                                "--samples_per_source=2", "--max_decode_len=6",
                                "--batch_size=4", "--reference_rate=1", "--corruption_rate=2",
                                f"--output_tsv={out}", *flags]) == 0
  return out


def test_data_script_combines_policies_reference_and_corruptions(tmp_path, toy_inputs):
  out = run_script(tmp_path, toy_inputs, "data.tsv")
  rows = read_rows(out)
  per_source = 2 * 2 + 1 + 2  # Two policies x 2 samples, the reference, 2 corruptions.
  assert len(rows) == len(PAIRS) * per_source
  chrf = registry.reward_from_spec("chrf")
  for i, (source, reference) in enumerate(PAIRS):
    block = rows[i * per_source:(i + 1) * per_source]
    assert all(row[0] == source for row in block)
    samples = [row[1] for row in block[:4]]
    expected = base.score_batch(chrf, [source] * 4, samples, [reference] * 4)
    np.testing.assert_allclose([float(row[2]) for row in block[:4]], expected, atol=1e-5)
    assert block[4][1:] == [reference, "1.000000"]
    assert [row[2] for row in block[5:]] == ["0.000000"] * 2
    assert all(row[1] != reference for row in block[5:])
  with open(out + ".summary.json", encoding="utf-8") as f:
    summary = json.load(f)
  origins = summary["origins"]
  weak, strong = toy_inputs[1], toy_inputs[2]
  assert origins[f"policy:{weak}"]["hypotheses"] == 12
  assert origins[f"policy:{strong}"]["hypotheses"] == 12
  assert origins["reference"] == {"hypotheses": 6, "mean_label": 1.0}
  corrupted = {k: v for k, v in origins.items() if k.startswith("corruption:")}
  assert sum(v["hypotheses"] for v in corrupted.values()) == 12
  assert all(v["mean_label"] == 0.0 for v in corrupted.values())
  with open(out, "rb") as f:
    assert summary["sha256"] == hashlib.sha256(f.read()).hexdigest()
  assert summary["rows"] == len(rows) and summary["num_sources"] == len(PAIRS)
  # The two policies sample differently, and the same seed gives the same file.
  assert [r[1] for r in rows[0:2]] != [r[1] for r in rows[2:4]]
  again = run_script(tmp_path, toy_inputs, "again.tsv")
  with open(out, "rb") as a, open(again, "rb") as b:
    assert a.read() == b.read()


def test_capped_corruption_labels_and_preference_rows(tmp_path, toy_inputs):
  out = run_script(tmp_path, toy_inputs, "capped.tsv", "--corruption_label=cap:0.3",
                   "--corruption_kinds=repeat_sentence,copy_source")
  rows = read_rows(out)
  chrf = registry.reward_from_spec("chrf")
  corrupted = [(i // 7, row) for i, row in enumerate(rows) if i % 7 >= 5]
  kinds = {row[1] == f"{REFERENCES[i]} {REFERENCES[i]}" for i, row in corrupted}
  assert kinds == {True, False}  # Both kinds were drawn.
  labels = base.score_batch(chrf, [row[0] for _, row in corrupted],
                            [row[1] for _, row in corrupted],
                            [REFERENCES[i] for i, _ in corrupted])
  np.testing.assert_allclose([float(row[2]) for _, row in corrupted],
                             np.minimum(labels, 0.3), atol=1e-5)
  prefs = tmp_path / "prefs.tsv"
  assert make_reward_data.main([f"--tsv={toy_inputs[0]}", "--policy=random_perturbation",
                                "--samples_per_source=2", "--reference_rate=1",
                                "--format=preference", f"--output_tsv={prefs}"]) == 0
  pairs = read_rows(prefs)
  assert pairs and all(len(p) == 3 and p[1] != p[2] for p in pairs)
  assert sum(p[1] == dict(PAIRS)[p[0]] for p in pairs) >= len(PAIRS) - 1  # Ref is chosen.


@pytest.mark.parametrize("flag, message", [
    ("--corruption_rate=-1", r"--corruption_rate=-1.0 is invalid: expected a number >= 0"),
    ("--reference_rate=1.5", r"--reference_rate=1.5 is invalid: expected a share in \[0, 1\]"),
    ("--corruption_kinds=truncate,typo", r"--corruption_kinds='truncate,typo'.*repeat_ngram"),
    ("--corruption_label=2", r"--corruption_label='2' is invalid"),
    ("--samples_per_source=0", r"--samples_per_source=0 is invalid"),
])
def test_bad_flags_fail_before_any_work(tmp_path, flag, message):
  with pytest.raises(ValueError, match=message):
    make_reward_data.main(["--tsv=unused.tsv", "--corruption_rate=1", flag,
                           f"--output_tsv={tmp_path / 'x.tsv'}"])
  with pytest.raises(ValueError, match="nothing to write"):
    make_reward_data.main(["--tsv=unused.tsv", f"--output_tsv={tmp_path / 'x.tsv'}"])
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------------- the build script, tiny
DE_EN_DATA = os.path.join(REPO, "rest_jax", "data", "de_en")
BUILD_SCRIPT = os.path.join(REPO, "scripts", "make_pretrained_reward_model.sh")


def run_build(*args, env=None, cwd=None):
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run(["bash", BUILD_SCRIPT, *args], capture_output=True, text=True,
                        env=dict(os.environ, **(env or {})), cwd=cwd, timeout=900, check=False)


def test_build_script_rejects_bad_arguments(tmp_path):
  result = run_build("--name=fr_en", str(tmp_path / "out"))
  assert result.returncode == 2 and "--name=fr_en is invalid: expected ding_de_en or de_en" \
      in result.stderr
  result = run_build("--name=de_en", str(tmp_path / "out"))
  assert result.returncode == 2 and "--name=de_en needs policy checkpoints" in result.stderr
  result = run_build("--name=de_en", str(tmp_path / "out"), str(tmp_path / "missing"))
  assert result.returncode == 2 and "missing does not exist" in result.stderr
  assert run_build("--bogus", "x").returncode == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(os.path.join(DE_EN_DATA, "spm_8k.model")),
                    reason="the de_en corpus (rest_jax/data/de_en) is not in this checkout")
def test_build_script_makes_a_de_en_reward_model_and_its_card(tmp_path):
  """The whole de_en recipe at toy sizes: 2 random policies (the first also gives the reward
  model its encoder), 4 training steps, no install."""
  from rest_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  size = vocab_lib.get_vocabulary("de_en").vocab_size
  policies = []
  for seed, step in ((1, 1000), (2, 2000)):
    model = toy_setup.toy_model(vocab=size)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                                    nn.meta.unbox(train_state.abstract_boxed_params(model)))
    ckpt = checkpointing.Checkpointer(str(tmp_path / f"bc{seed}"))
    ckpt.save(step, params, {"model_config": dataclasses.asdict(model.config)})
    ckpt.close()
    policies.append(str(tmp_path / f"bc{seed}" / str(step)))
  pretrained = os.path.join(REPO, "rest_jax", "rewards", "pretrained", "de_en")
  existed = os.path.exists(pretrained)
  out = tmp_path / "build"
  env = {"POLICY_SOURCES": "8", "EXTRA_SOURCES": "16", "VALIDATION_SOURCES": "8",
         "HELDOUT_SOURCES": "4", "PROBE_SOURCES": "6", "SAMPLES": "1", "DECODE_LEN": "8",
         "STEPS": "4", "EVAL_EVERY": "2", "BATCH_SIZE": "8", "MIN_WIN_RATE": "0",
         "POLICIES": policies[1], "INIT_ENCODER_FROM": policies[0]}
  result = run_build("--name=de_en", "--no_install", str(out), policies[0], env=env,
                     cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "not installed (--no_install)" in result.stdout
  assert os.path.exists(pretrained) == existed
  commands = (out / "commands.sh").read_text(encoding="utf-8")
  assert commands.count("make_reward_data.py") == 4 and "train_reward_model.py" in commands
  assert f"--policy={policies[0]}" in commands and f"--policy={policies[1]}" in commands
  assert f"--init_encoder_from={policies[0]}" in commands  # The reward model's starting encoder.
  card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
  train_sha = hashlib.sha256((out / "train.tsv").read_bytes()).hexdigest()
  assert card.startswith("# Reward model `de_en`") and train_sha in card
  assert commands.strip() in card and "Spearman ρ" in card and "Result: **passed**." in card
  for kind in corruptions.KINDS:
    assert f"| {kind} | " in card
  probe = json.loads((out / "probe.json").read_text(encoding="utf-8"))
  assert probe["passed"] is True and set(probe["probes"]) == {
      f"learned:path={out}/reward_model", "chrf"}
  rows = read_rows(out / "train.tsv")
  assert len(rows) == 8 * (2 * 1 + 1 + 2) + 16 * (1 + 2)
