"""Tests for rest_jax.text_metrics against sacrebleu and hand-computed distinct-n."""

import numpy as np
import pytest
import sacrebleu

from rest_jax import text_metrics

HYPS = ["the cat sat on the mat .", "hello world , hello world", "a quick brown fox"]
REFS = ["the cat is on the mat .", "hello there world", "the quick brown fox jumps"]


def test_bleu_and_chrf_match_sacrebleu():
  assert text_metrics.corpus_bleu(HYPS, REFS) == pytest.approx(
      sacrebleu.corpus_bleu(HYPS, [REFS]).score)
  assert text_metrics.corpus_chrf(HYPS, REFS) == pytest.approx(
      sacrebleu.corpus_chrf(HYPS, [REFS]).score)
  assert text_metrics.corpus_bleu(REFS, REFS) == pytest.approx(100.0)
  assert 0.0 < text_metrics.corpus_bleu(HYPS, REFS) < 100.0


def test_length_ratio_uses_bleu_token_counts():
  # 13a tokens: hyps 7 + 5 + 4 = 16, refs 7 + 3 + 5 = 15.
  assert text_metrics.length_ratio(HYPS, REFS) == pytest.approx(16 / 15)
  score = sacrebleu.corpus_bleu(HYPS, [REFS])
  assert text_metrics.length_ratio(HYPS, REFS) == pytest.approx(score.sys_len / score.ref_len)
  # 13a splits punctuation from words: "world." is two tokens.
  assert text_metrics.length_ratio(["hello world."], ["hello world"]) == pytest.approx(3 / 2)
  assert text_metrics.length_ratio([""], [""]) == 0.0


def test_distinct_n_hand_computed():
  hyps = ["a b a b", "a b c", "x"]
  # Unigrams: a b a b a b c x -> 8 total, {a, b, c, x} unique.
  assert text_metrics.distinct_n(hyps, 1) == pytest.approx(4 / 8)
  # Bigrams: (a b)(b a)(a b) + (a b)(b c) -> 5 total, {ab, ba, bc} unique; "x" has none.
  assert text_metrics.distinct_n(hyps, 2) == pytest.approx(3 / 5)
  # Trigrams do not cross the boundary between "a b a b" and "a b c".
  assert text_metrics.distinct_n(hyps, 3) == pytest.approx(3 / 3)
  assert text_metrics.distinct_n(["x", ""], 2) == 0.0
  assert text_metrics.distinct_n(["same same same"], 1) == pytest.approx(1 / 3)


def test_repetition_rate_hand_computed():
  rate = text_metrics.repetition_rate
  # The second occurrence of a bigram marks both its tokens; the first occurrence is original.
  assert rate(["a b c a b"]) == pytest.approx(2 / 5)
  # Overlapping repeats: bigrams (a a) start at 0, 1, 2; the later two cover tokens 1..3.
  assert rate(["a a a a"]) == pytest.approx(3 / 4)
  # One repeated word is ordinary language, not a loop.
  assert rate(["the cat and the dog"]) == 0.0
  # Bigrams never cross hypotheses: "x y" twice, once in each, is not a repeat.
  assert rate(["x y", "x y"]) == 0.0
  # Runaway characters: 4+ identical letters in a token, case-insensitive; 3 letters, digits
  # and punctuation runs are fine.
  assert rate(["trrrrrrr"]) == 1.0
  assert rate(["go Trrrr now"]) == pytest.approx(1 / 3)
  assert rate(["Schifffahrt 10000 .... zzz"]) == 0.0
  assert rate(["Tee Teee"]) == 0.0 and rate(["Teeee"]) == 1.0
  # Corpus-level: repeated tokens summed over hypotheses / all tokens.
  assert rate(["a b a b", "c d e f g h"]) == pytest.approx(2 / 10)
  assert rate(["a b a b c"], n=3) == 0.0 and rate(["a a"], n=1) == pytest.approx(1 / 2)
  assert rate(["", " "]) == 0.0 and rate([]) == 0.0


def test_summarize_translations():
  rewards = np.array([0.5, 0.75, 1.0], np.float32)
  summary = text_metrics.summarize_translations(["s1", "s2", "s3"], HYPS, REFS, rewards)
  assert summary["mean_reward"] == pytest.approx(75.0)
  assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
  assert summary["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
  assert summary["length_ratio"] == pytest.approx(16 / 15)
  assert summary["distinct_1"] == pytest.approx(text_metrics.distinct_n(HYPS, 1))
  assert summary["distinct_2"] == pytest.approx(text_metrics.distinct_n(HYPS, 2))
  assert summary["repetition_rate"] == pytest.approx(2 / 16)  # The second "hello world".
  assert summary["num_examples"] == 3
  assert set(summary) == {"mean_reward", "bleu", "chrf", "length_ratio", "distinct_1",
                          "distinct_2", "repetition_rate", "num_examples"}


def test_bad_inputs():
  with pytest.raises(ValueError, match="2 hyps and 1 refs"):
    text_metrics.corpus_bleu(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="at least one"):
    text_metrics.corpus_chrf([], [])
  with pytest.raises(ValueError, match="not a single string"):
    text_metrics.corpus_bleu("a b", "a b")
  with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
    text_metrics.distinct_n(["a"], 0)
  with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
    text_metrics.repetition_rate(["a"], n=0)
  with pytest.raises(ValueError, match="not a single string"):
    text_metrics.repetition_rate("a a a")
  with pytest.raises(ValueError, match=r"'rewards': 2"):
    text_metrics.summarize_translations(["s"] * 3, HYPS, REFS, [0.1, 0.2])
