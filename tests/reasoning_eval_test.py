"""pass@k, majority@k and Best-of-N: estimators against brute force, and sampled evaluation."""

import itertools
import os

import jax
import numpy as np
import pytest
import seqio

import toy_setup
from rest_jax import evaluate, reasoning_eval
from rest_jax.data.pipeline import Example
from rest_jax.rewards import registry


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_brute_force_enumeration(n):
  for c in range(n + 1):
    for k in range(1, n + 1):
      subsets = list(itertools.combinations(range(n), k))  # Samples 0..c-1 are the correct ones.
      brute = sum(any(i < c for i in subset) for subset in subsets) / len(subsets)
      assert reasoning_eval.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_is_unbiased_over_random_draws():
  """Averaged over many n-sample draws, the estimate equals 1 - (1 - p)^k."""
  rng = np.random.RandomState(0)
  correct = rng.rand(20000, 10) < 0.2
  assert reasoning_eval.mean_pass_at_k(correct, 4) == pytest.approx(100 * (1 - 0.8 ** 4),
                                                                    abs=0.6)
  assert reasoning_eval.mean_pass_at_k(correct, 1) == pytest.approx(100 * correct.mean())


def test_pass_at_k_bad_arguments():
  with pytest.raises(ValueError, match=r"need 0 <= num_correct <= num_samples and 1 <= k"):
    reasoning_eval.pass_at_k(4, 5, 1)
  with pytest.raises(ValueError, match=r"1 <= k <= num_samples"):
    reasoning_eval.pass_at_k(4, 1, 5)


def test_majority_vote_and_best_of_n():
  assert reasoning_eval.majority_vote(["3", None, "4", "4", "3"]) == 0  # Tie: earliest answer.
  assert reasoning_eval.majority_vote(["3", "4", "4"]) == 1
  assert reasoning_eval.majority_vote([None, None]) is None
  answers = [["5", "6", "6"], [None, "2", "2"], [None, None, None]]
  correct = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
  assert reasoning_eval.mean_majority_at_k(answers, correct, 1) == pytest.approx(100 / 3)
  assert reasoning_eval.mean_majority_at_k(answers, correct, 3) == pytest.approx(100 / 3)
  assert reasoning_eval.mean_majority_at_k(answers, correct, 2) == pytest.approx(200 / 3)
  scores = np.array([[0.1, 0.9, 0.2], [0.5, 0.5, 0.1], [0.0, 0.0, 0.0]])
  assert reasoning_eval.mean_best_of_n(scores, correct, 1) == pytest.approx(100 / 3)
  assert reasoning_eval.mean_best_of_n(scores, correct, 3) == 0.0
  # Selected by the verifier itself, best-of-n is "any of the first n is correct".
  assert reasoning_eval.mean_best_of_n(correct, correct, 2) == pytest.approx(200 / 3)


def test_answer_keys_for_the_vote():
  verifier = registry.make_reward("final_answer")
  keys = [reasoning_eval.answer_key(verifier, h) for h in
          ("x\nAnswer: 12", "Answer: 12.0", "Answer: twelve", "no answer", "Answer: ")]
  assert keys == ["12", "12", "twelve", None, None]
  assert reasoning_eval.answer_key(registry.make_reward("exact_match"), " Paris ") == "Paris"


def test_config_errors():
  with pytest.raises(ValueError, match=r"ks=\(1, 8\) is invalid: .* \[1, num_samples=4\]"):
    reasoning_eval.ReasoningEvalConfig(ks=(1, 8), num_samples=4)
  with pytest.raises(ValueError, match=r"EvalConfig.pass_at_k=\(0,\) is invalid"):
    evaluate.EvalConfig(pass_at_k=(0,))
  with pytest.raises(ValueError, match="EvalConfig.pass_at_k_samples=0 is invalid"):
    evaluate.EvalConfig(pass_at_k=(1,), pass_at_k_samples=0)
  with pytest.raises(ValueError, match="EvalConfig.pass_at_k_temperature=0.0 is invalid"):
    evaluate.EvalConfig(pass_at_k_temperature=0.0)
  with pytest.raises(ValueError, match=r"pass_at_k_reranker='rm:path=/x' is invalid: unknown "
                                       r"reward 'rm'; valid: \['bleu'"):
    evaluate.EvalConfig(pass_at_k_reranker="rm:path=/x")
  with pytest.raises(ValueError, match=r"EvalConfig.reward='verifier' is invalid: unknown "
                                       r"reward 'verifier'; valid: \['bleu'"):
    evaluate.EvalConfig(reward="verifier")
  with pytest.raises(ValueError, match=r"EvalConfig.reward=3 is invalid: unknown reward None"):
    evaluate.EvalConfig(reward=3)


def test_sampled_evaluation_of_a_toy_policy(tmp_path):
  vocab = seqio.ByteVocabulary()
  model = toy_setup.toy_model(decoder_only=True, vocab=vocab.vocab_size)
  mesh = toy_setup.mesh(data=2)
  factory, _, state, _ = toy_setup.factory_and_state(model, mesh)
  examples = [Example(i, f"{i}+1=", str(i + 1), np.asarray(vocab.encode(f"{i}+1=") + [1],
                                                            np.int32), np.zeros(1, np.int32))
              for i in range(5)]
  # Accepts every finished sample: pass@k of a random policy is its rate of finishing in time.
  finished = registry.make_reward("python", fn="reasoning_eval_test:any_output",
                                  needs_reference=False)
  config = reasoning_eval.ReasoningEvalConfig(ks=(1, 2, 4), num_samples=4, max_decode_len=8,
                                              batch_size=4)
  evaluator = reasoning_eval.ReasoningEvaluator(model, mesh, factory.param_shardings, vocab,
                                                finished, config, source_len=8,
                                                selector=finished)
  samples = evaluator.sample(state.params, examples, jax.random.PRNGKey(0))
  assert len(samples) == 5 and all(len(s) == 4 for s in samples)
  metrics = evaluator.evaluate(state.params, examples, jax.random.PRNGKey(0))
  assert metrics == evaluator.evaluate(state.params, examples, jax.random.PRNGKey(0))
  done = np.array([[s != "" for s in per] for per in samples])
  expected = [reasoning_eval.mean_pass_at_k(done, k) for k in (1, 2, 4)]
  assert [metrics["pass_at_k"][k] for k in ("1", "2", "4")] == pytest.approx(expected)
  assert metrics["best_of_n_reranked"]["4"] == pytest.approx(100 * done.any(1).mean())
  rows = [dict(metrics, run=run, split="validation", mean_reward=12.5)
          for run in ("G0I0", "G1I0")]
  paths = reasoning_eval.write_reports(rows, str(tmp_path))
  assert paths == [os.path.join(tmp_path, "pass_at_k.md"),
                   os.path.join(tmp_path, "pass_at_k_validation.png")]
  assert os.path.getsize(paths[1]) > 0
  table = open(paths[0]).read().split("## validation\n\n")[1].splitlines()
  assert table[0] == ("| run | greedy pass@1 | pass@1 | pass@2 | pass@4 | maj@1 | maj@2 | maj@4 "
                      "| best-of-1 (reranked) | best-of-2 (reranked) | best-of-4 (reranked) |")
  assert table[2].startswith(f"| G0I0 | 12.50 | {metrics['pass_at_k']['1']:.2f} |")


def any_output(source, hypothesis, reference):
  del source, reference
  return bool(hypothesis)
