"""The generated arithmetic-chain task family: solutions, levels, disjoint splits, the seqio task."""

import hashlib

import numpy as np
import pytest

from rest_jax.data import arithmetic
from rest_jax.data import pipeline
from rest_jax.data import reasoning_tasks
from rest_jax.rewards import registry as reward_registry

SMALL = {"train": 30, "grow": 60, "validation": 12, "test": 10}


def _digest(data):
  text = "\n".join(f"{split}\t{p.prompt}\t{arithmetic.target_of(split, p)}"
                   for split, problems in data.items() for p in problems)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_solution_steps_and_answer():
  problem = arithmetic.Problem(3, (37, 8, 15, 42), ("+", "-", "+"))
  assert problem.prompt == "37+8-15+42="
  assert problem.solution == "37+8=45\n45-15=30\n30+42=72\nAnswer: 72"
  assert problem.answer == 72 == eval(problem.prompt[:-1])  # pylint: disable=eval-used


def test_step_checking_verifier_rejects_right_answers_for_wrong_reasons():
  problem = arithmetic.Problem(2, (29, 35, 30), ("+", "-"))
  assert arithmetic.parse_prompt(problem.prompt) == problem
  assert arithmetic.parse_prompt("12+=") is None and arithmetic.parse_prompt("Hallo") is None
  lucky = "29+35=74\n74-30=34\nAnswer: 34"  # from a Grow step: two wrong steps, answer right
  assert problem.answer == 34
  final_answer = reward_registry.make_reward("final_answer")
  assert final_answer.score([problem.prompt], [lucky], ["34"])[0] == 1.0
  steps = reward_registry.reward_from_spec(
      "python:fn=rest_jax.data.arithmetic:solution_is_correct")
  assert steps.exact
  got = steps.score([problem.prompt] * 3, [problem.solution, lucky, problem.solution + "\n"],
                    ["34"] * 3)
  np.testing.assert_array_equal(got, [1.0, 0.0, 1.0])
  assert arithmetic.flawed_steps(lucky) and not arithmetic.flawed_steps(problem.solution)
  assert arithmetic.flawed_steps("29+35=64\nthirty-four\nAnswer: 34")
  with pytest.raises(ValueError, match="not an arithmetic chain prompt"):
    arithmetic.solution_is_correct("What is 2+2?", "4", "4")


def test_levels_values_and_answers():
  data = arithmetic.generate(3, SMALL)
  assert [len(data[s]) for s in arithmetic.SPLITS] == [10, 10, 10, 10, 12, 30, 60]
  for level in arithmetic.LEVELS:
    assert {p.level for p in data[f"test_l{level}"]} == {level}
  for split in ("train", "grow", "validation"):
    assert {p.level for p in data[split]} == set(arithmetic.IN_DISTRIBUTION_LEVELS)
  for problems in data.values():
    for p in problems:
      assert len(p.operands) == p.level + 1 and len(p.ops) == p.level
      assert all(0 <= x <= arithmetic.MAX_OPERAND for x in p.operands)
      assert all(c >= 0 for _, _, _, c in p.steps())  # Never below zero on the way.
      assert p.answer == eval(p.prompt[:-1])  # pylint: disable=eval-used


def test_splits_are_disjoint_and_reproducible():
  data = arithmetic.generate(0, SMALL)
  prompts = [p.prompt for problems in data.values() for p in problems]
  assert len(prompts) == len(set(prompts))
  assert _digest(arithmetic.generate(0, SMALL)) == _digest(data)
  assert _digest(arithmetic.generate(1, SMALL)) != _digest(data)
  # A split's problems do not depend on the size of later splits.
  bigger = arithmetic.generate(0, dict(SMALL, grow=90))
  assert bigger["train"] == data["train"] and bigger["grow"][:60] == data["grow"]


def test_default_data_is_pinned():
  """The registered task's data, byte for byte: a change here changes every result."""
  data = arithmetic.generate(0)
  assert {s: len(v) for s, v in data.items()} == {
      "test_l1": 300, "test_l2": 300, "test_l3": 300, "test_l4": 300, "validation": 300,
      "train": 3000, "grow": 6000}
  assert _digest(data) == "16225e8f97cfa9c0a40c809fcef86d09fe64e724d07abd2077a6e582d7152030"


def test_bad_sizes_and_seed_are_clear_errors():
  with pytest.raises(ValueError, match=r"sizes \['tests'\] are unknown; allowed keys: "
                                       r"\['grow', 'test', 'train', 'validation'\]"):
    arithmetic.generate(0, {"tests": 3})
  with pytest.raises(ValueError, match="split size grow=0 is invalid: expected a positive"):
    arithmetic.generate(0, {"grow": 0})
  with pytest.raises(ValueError, match="seed='0' is invalid"):
    arithmetic.generate("0")
  with pytest.raises(ValueError, match=r"level=7 is invalid; allowed: \[1, 2, 3, 4\]"):
    arithmetic.random_problem(arithmetic.example_rng(0, "x", 0), 7)
  with pytest.raises(ValueError, match="could not draw 5000 distinct level-1 problems"):
    arithmetic.generate(0, {"test": 5000})


def test_seqio_task_targets_per_split():
  reasoning_tasks.register_arithmetic_task("arith_small_test", seed=3, sizes=SMALL,
                                           overwrite=True)
  data = arithmetic.generate(3, SMALL)
  train = pipeline.load_examples("arith_small_test", "train")
  assert [(e.source, e.reference) for e in train] == [(p.prompt, p.solution)
                                                      for p in data["train"]]
  grow = pipeline.load_examples("arith_small_test", "grow", max_examples=5)
  assert [(e.source, e.reference) for e in grow] == [(p.prompt, str(p.answer))
                                                     for p in data["grow"][:5]]
  vocab = pipeline.get_task_vocabulary("arith_small_test")
  assert vocab.decode(train[0].targets[:-1].tolist()) == data["train"][0].solution
  assert train[0].targets[-1] == 1  # EOS.
  assert set(pipeline.get_task("arith").splits) == set(arithmetic.SPLITS)
