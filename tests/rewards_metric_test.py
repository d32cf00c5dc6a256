"""Tests for the reward interface, the sacrebleu rewards, the verifiers and the registry."""

import math

import numpy as np
import pytest
import sacrebleu

from rest_jax.rewards import base, metric_rewards, registry, verifiers

# Real pairs from the shipped Ding corpus, with hypotheses a policy might produce.
SOURCES = [
    "Er ist fort.",
    "Bitte sprechen Sie langsamer, sonst kann ich nicht mitschreiben.",
    "Auch Fachleute sind nicht vor Fehlern gefeit.",
    "Das Wetter ist heute schön.",
    "Ich habe keine Zeit.",
    "Wir sehen uns morgen.",
]
REFERENCES = [
    "He is away.",
    "Please talk more slowly, otherwise I cannot take down what you say.",
    "Experts can be fallible.",
    "The weather is nice today.",
    "I have no time.",
    "See you tomorrow.",
]
HYPOTHESES = [
    "He is gone.",
    "Please speak slower, otherwise I can not write along.",
    "Even experts are not immune to mistakes.",
    "The weather is nice today.",
    "I have no time no time.",
    "",
]


def test_chrf_matches_sacrebleu_sentence_chrf():
  scores = base.score_batch(metric_rewards.ChrfReward(), SOURCES, HYPOTHESES, REFERENCES)
  expected = [sacrebleu.sentence_chrf(h, [r]).score / 100 for h, r in zip(HYPOTHESES, REFERENCES)]
  assert scores.dtype == np.float32
  np.testing.assert_allclose(scores, expected, rtol=1e-6)
  assert scores[3] == 1.0 and scores[5] == 0.0
  assert np.all((scores >= 0) & (scores <= 1)) and 0 < scores[1] < 1


def test_chrf_plus_plus_matches_sacrebleu():
  scores = base.score_batch(metric_rewards.ChrfReward(word_order=2), SOURCES, HYPOTHESES,
                            REFERENCES)
  expected = [sacrebleu.sentence_chrf(h, [r], word_order=2).score / 100
              for h, r in zip(HYPOTHESES, REFERENCES)]
  np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_bleu_matches_sacrebleu_sentence_bleu():
  scores = base.score_batch(metric_rewards.BleuReward(), SOURCES, HYPOTHESES, REFERENCES)
  expected = [sacrebleu.sentence_bleu(h, [r]).score / 100 for h, r in zip(HYPOTHESES, REFERENCES)]
  np.testing.assert_allclose(scores, expected, rtol=1e-6)
  # Effective order: "He is gone." shares only 1- to 3-grams with "He is away." and still
  # gets a positive score.
  assert scores[0] > 0 and scores[3] == pytest.approx(1.0)


def test_duplicates_are_scored_once_and_keep_their_rows():
  hyps = HYPOTHESES * 3
  refs = REFERENCES * 3
  scores = base.score_batch(metric_rewards.ChrfReward(), SOURCES * 3, hyps, refs)
  np.testing.assert_array_equal(scores, np.tile(scores[:len(HYPOTHESES)], 3))


def test_process_pool_gives_the_same_scores(monkeypatch):
  monkeypatch.setattr(metric_rewards, "_MIN_PAIRS_FOR_POOL", 1)
  single = base.score_batch(metric_rewards.BleuReward(), SOURCES, HYPOTHESES, REFERENCES)
  pooled = base.score_batch(metric_rewards.BleuReward(num_workers=2), SOURCES, HYPOTHESES,
                            REFERENCES)
  np.testing.assert_array_equal(single, pooled)


def test_bad_metric_options_fail_at_construction():
  with pytest.raises(ValueError, match="num_workers"):
    metric_rewards.ChrfReward(num_workers=-1)
  with pytest.raises(Exception, match="no_such_tokenizer|tokeniz"):
    metric_rewards.BleuReward(tokenize="no_such_tokenizer")


class ConstantReward(base.Reward):
  name = "constant"

  def __init__(self, values):
    self.values = values

  def score(self, sources, hypotheses, references=None):
    return np.asarray(self.values, np.float32)


@pytest.mark.parametrize("values, bad_index, bad_text", [
    ([0.5, 1.5, 0.2], 1, "1.5"),
    ([0.5, 0.1, -0.25], 2, "-0.25"),
    ([math.nan, 0.1, 0.2], 0, "nan"),
])
def test_out_of_range_or_nan_scores_name_the_reward_index_and_value(values, bad_index, bad_text):
  with pytest.raises(ValueError, match=rf"'constant' returned .*{bad_text}.* at index "
                                       rf"{bad_index}.*\[0, 1\]"):
    base.score_batch(ConstantReward(values), ["s"] * 3, ["h"] * 3)


def test_wrong_number_of_scores_is_an_error():
  with pytest.raises(ValueError, match=r"returned shape \(2,\); expected \(3,\)"):
    base.score_batch(ConstantReward([0.1, 0.2]), ["s"] * 3, ["h"] * 3)


def test_input_length_mismatch_and_missing_references():
  chrf = metric_rewards.ChrfReward()
  with pytest.raises(ValueError, match="'chrf': got 2 hypotheses but 1 references"):
    base.score_batch(chrf, ["a", "b"], ["x", "y"], ["r"])
  with pytest.raises(ValueError, match="'chrf': got 2 hypotheses but 3 sources"):
    base.score_batch(chrf, ["a", "b", "c"], ["x", "y"], ["r", "s"])
  with pytest.raises(ValueError, match="'chrf' is reference-based"):
    base.score_batch(chrf, ["a"], ["x"])
  with pytest.raises(ValueError, match="not a single str"):
    base.score_batch(chrf, ["a"], "x", ["r"])
  with pytest.raises(ValueError, match=r"hypotheses\[1\] is int"):
    base.score_batch(chrf, ["a", "b"], ["x", 3], ["r", "s"])
  assert base.score_batch(chrf, [], [], []).shape == (0,)


def test_exact_match_normalisation_options():
  hyps = ["  The  cat.\n", "the cat.", "The cat"]
  refs = ["The cat.", "The cat.", "The cat."]
  default = base.score_batch(verifiers.ExactMatchVerifier(), ["s"] * 3, hyps, refs)
  np.testing.assert_array_equal(default, [1.0, 0.0, 0.0])
  folded = base.score_batch(verifiers.ExactMatchVerifier(case_fold=True), ["s"] * 3, hyps, refs)
  np.testing.assert_array_equal(folded, [1.0, 1.0, 0.0])
  raw = verifiers.ExactMatchVerifier(strip=False, collapse_whitespace=False)
  np.testing.assert_array_equal(base.score_batch(raw, ["s"] * 3, hyps, refs), [0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="case_fold='yes'"):
    verifiers.ExactMatchVerifier(case_fold="yes")


def test_predicate_verifier():
  is_answer_42 = verifiers.PredicateVerifier(lambda s, h, r: h.strip().endswith("42"),
                                             name="answer_42")
  scores = base.score_batch(is_answer_42, ["q1", "q2"], ["it is 42", "it is 41"])
  np.testing.assert_array_equal(scores, [1.0, 0.0])
  uses_reference = verifiers.PredicateVerifier(lambda s, h, r: h == r, needs_reference=True)
  np.testing.assert_array_equal(
      base.score_batch(uses_reference, ["q", "q"], ["a", "b"], ["a", "a"]), [1.0, 0.0])
  sloppy = verifiers.PredicateVerifier(lambda s, h, r: 0.3, name="sloppy")
  with pytest.raises(ValueError, match="'sloppy': predicate returned 0.3 .* at index 0"):
    base.score_batch(sloppy, ["q"], ["a"])


def test_registry_names_and_specs():
  assert registry.list_rewards() == ["bleu", "chrf", "exact_match", "final_answer", "learned",
                                     "python"]
  assert isinstance(registry.make_reward("chrf"), metric_rewards.ChrfReward)
  chrf_pp = registry.reward_from_spec("chrf:word_order=2, num_workers=0")
  assert dict(chrf_pp.options)["word_order"] == 2
  assert registry.reward_from_spec("exact_match:case_fold=true").options["case_fold"] is True
  assert registry.parse_spec("learned:path=/x/y,batch_size=8") == (
      "learned", {"path": "/x/y", "batch_size": 8})
  with pytest.raises(ValueError, match=r"unknown reward 'comet'; valid rewards: \['bleu', "
                                       r"'chrf', 'exact_match', 'final_answer', 'learned', "
                                       r"'python'\]"):
    registry.make_reward("comet")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['order'\] for reward 'chrf'"):
    registry.reward_from_spec("chrf:order=3")
  with pytest.raises(ValueError, match="needs exactly one of the options 'path'"):
    registry.make_reward("learned")
  with pytest.raises(ValueError, match="needs exactly one of the options 'path'"):
    registry.reward_from_spec("learned:path=/x,pretrained=ding_de_en")
  with pytest.raises(ValueError, match=r"unknown pretrained='nope'.*\['de_en', 'ding_de_en'\]"):
    registry.reward_from_spec("learned:pretrained=nope")
  with pytest.raises(ValueError, match="not key=value"):
    registry.reward_from_spec("chrf:word_order")
