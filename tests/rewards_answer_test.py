"""The final-answer verifier and verifiers given by import path."""

import numpy as np
import pytest

from rest_jax.data import arithmetic
from rest_jax.rewards import answer_verifiers, base, registry


def is_even_answer(source, hypothesis, reference):
  """A user predicate for the `python` reward (used by import path below)."""
  del source, reference
  return hypothesis.strip().endswith(("0", "2", "4", "6", "8"))


def test_final_answer_numeric():
  reward = registry.make_reward("final_answer")
  hyps = ["37+8=45\n45-15=30\nAnswer: 30", "Answer: 31", "Answer: 30.0", "no answer line",
          "Answer: 12\nAnswer: 30", "Answer: 1,000", "Answer: $30.", "Answer: thirty"]
  refs = ["30", "30", "30", "30", "Answer: 30", "1000", "30", "30"]
  np.testing.assert_array_equal(base.score_batch(reward, [""] * 8, hyps, refs),
                                [1, 0, 1, 0, 1, 1, 1, 0])
  assert answer_verifiers.parse_number("3/4") == answer_verifiers.parse_number("0.75")
  assert answer_verifiers.parse_number("1e5") is None


def test_final_answer_matches_the_generated_task():
  reward = registry.make_reward("final_answer", pattern=arithmetic.ANSWER_PATTERN)
  problems = arithmetic.generate(0, {"train": 6, "grow": 3, "validation": 3, "test": 3})
  for split, ps in problems.items():
    refs = [arithmetic.target_of(split, p) for p in ps]
    scores = base.score_batch(reward, [p.prompt for p in ps], [p.solution for p in ps], refs)
    assert scores.tolist() == [1.0] * len(ps)
    wrong = [p.solution.replace(f"Answer: {p.answer}", f"Answer: {p.answer + 1}") for p in ps]
    assert base.score_batch(reward, [""] * len(ps), wrong, refs).tolist() == [0.0] * len(ps)


def test_final_answer_options():
  hyps, refs = ["#### Paris", "#### paris ", "#### 5 #### 6"], ["Paris", "Paris", "5"]
  exact = registry.make_reward("final_answer", pattern=r"####\s*(\S+)", compare="exact")
  assert base.score_batch(exact, [""] * 3, hyps, refs).tolist() == [1, 0, 0]
  folded = registry.reward_from_spec(
      "final_answer:pattern=####\\s*(\\S+),case_fold=true,occurrence=first")
  assert base.score_batch(folded, [""] * 3, hyps, refs).tolist() == [1, 1, 1]
  whole = registry.make_reward("final_answer", pattern=r"-?\d+")  # No group: whole match.
  assert base.score_batch(whole, ["", ""], ["2+3=5", "2+3=6"], ["5", "5"]).tolist() == [1, 0]


@pytest.mark.parametrize("options,message", [
    ({"pattern": "(a)(b)"}, "has 2 groups; allowed: 0"),
    ({"pattern": "(unclosed"}, "is not a valid regular expression"),
    ({"pattern": ""}, "pattern='' is invalid"),
    ({"compare": "fuzzy"}, r"compare='fuzzy' is invalid; allowed: \['numeric', 'exact'\]"),
    ({"occurrence": "middle"}, r"occurrence='middle' is invalid; allowed: \['last', 'first'\]"),
    ({"case_fold": "yes"}, "case_fold='yes' is invalid"),
])
def test_final_answer_bad_options(options, message):
  with pytest.raises(ValueError, match=message):
    registry.make_reward("final_answer", **options)


def test_python_verifier_by_import_path():
  for path in ("rewards_answer_test:is_even_answer",
               "rewards_answer_test.is_even_answer"):
    reward = registry.reward_from_spec(f"python:fn={path}")
    assert reward.needs_reference
    assert base.score_batch(reward, ["", ""], ["Answer: 4", "Answer: 5"],
                            ["x", "x"]).tolist() == [1, 0]
  free = registry.make_reward("python", fn="rewards_answer_test:is_even_answer",
                              needs_reference=False)
  assert base.score_batch(free, [""], ["2"]).tolist() == [1]
  with pytest.raises(ValueError, match="reward 'python' needs option"):
    registry.make_reward("python")
  with pytest.raises(ValueError, match="fn='not a path' is invalid: expected an import path"):
    registry.make_reward("python", fn="not a path")
  with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
    registry.make_reward("python", fn="no_such_module_xyz:f")
  with pytest.raises(ValueError, match="has no callable 'nothing'"):
    registry.make_reward("python", fn="rewards_answer_test:nothing")
