"""Tests for rest_jax.filters: each filter against a per-source reference, chains, schedules."""

import numpy as np
import pytest

from rest_jax import filters as F


def _columns(source_id, reward, is_original=None, sample_key=None):
  n = len(source_id)
  if is_original is None:
    is_original = np.zeros(n, dtype=bool)
  if sample_key is None:
    sample_key = np.array([bytes([i % 256, i // 256]) for i in range(n)], dtype=object)
  return F.GrownColumns(np.asarray(source_id), np.asarray(reward, np.float32),
                        np.asarray(is_original, bool), np.asarray(sample_key, dtype=object))


def _random_columns(seed=0, num_rows=400, num_sources=13):
  rng = np.random.default_rng(seed)
  # Coarse rewards so ties are common; ids not contiguous to exercise grouping.
  reward = rng.integers(0, 11, num_rows) / 10
  source_id = rng.integers(0, num_sources, num_rows) * 7 + 3
  keys = np.array([bytes([k]) for k in rng.integers(0, 4, num_rows)], dtype=object)
  return _columns(source_id, reward, rng.random(num_rows) < 0.1, keys)


def _per_source_reference(columns, keep_fn):
  """Loop reference: keep_fn(rewards of one source as float64, row indices) -> mask."""
  keep = np.zeros(columns.num_rows, dtype=bool)
  for sid in np.unique(columns.source_id):
    rows = np.flatnonzero(columns.source_id == sid)
    keep[rows] = keep_fn(columns.reward[rows].astype(np.float64), rows)
  return keep


def test_threshold_is_strict():
  columns = _columns([0, 0, 1, 1], [0.0, 0.7, 0.70001, 1.0])
  np.testing.assert_array_equal(F.Threshold(0.7)(columns), [False, False, True, True])
  np.testing.assert_array_equal(F.Threshold(0.01)(columns), [False, True, True, True])


def test_tau_zero_keeps_the_whole_grown_set():
  """The paper's "G=1 I=0" row (τ = 0) trains on everything, reward-0 samples included."""
  columns = _columns([0, 0, 1, 1, 1], [0.0, 0.7, 0.0, 1.0, 0.3],
                     is_original=[False, False, False, False, True])
  np.testing.assert_array_equal(F.Threshold(0.0)(columns), np.ones(5, bool))
  for original_data in ("keep", "filter"):
    result = F.apply_filter(columns, "threshold:tau=0.0", original_data)
    assert result.num_kept == columns.num_rows


@pytest.mark.parametrize("p", [0.0, 25.0, 50.0, 90.0, 99.5])
def test_percentile_matches_numpy_per_source(p):
  columns = _random_columns()
  expected = _per_source_reference(columns, lambda r, _: r >= np.percentile(r, p))
  np.testing.assert_array_equal(F.Percentile(p)(columns), expected)
  if p == 0.0:
    assert F.Percentile(p)(columns).all()


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_interpolate_matches_reference(gamma):
  columns = _random_columns(seed=1)
  expected = _per_source_reference(
      columns, lambda r, _: r >= min(gamma * r.max() + (1 - gamma) * r.mean(), r.max()))
  keep = F.Interpolate(gamma)(columns)
  np.testing.assert_array_equal(keep, expected)
  # Every source keeps at least its best sample.
  assert set(columns.source_id[keep]) == set(columns.source_id)


def test_interpolate_keeps_constant_source_despite_rounding():
  # In floating point 0.1 * r + 0.9 * r > r for r = float32(0.01); the best sample must survive.
  columns = _columns([5, 5, 5], [0.01, 0.01, 0.01])
  assert F.Interpolate(0.1)(columns).all()


def test_top_k_and_cap_break_ties_by_row_order():
  columns = _columns([0, 0, 0, 0, 1, 1], [0.5, 0.9, 0.5, 0.5, 0.2, 0.2])
  np.testing.assert_array_equal(F.TopK(2)(columns), [True, True, False, False, True, True])
  np.testing.assert_array_equal(F.parse_filter("cap:max_per_source=1")(columns),
                                [False, True, False, False, True, False])


def test_top_k_matches_reference():
  columns = _random_columns(seed=2)
  def best_three(r, rows):
    order = sorted(range(len(r)), key=lambda j: (-r[j], rows[j]))[:3]
    mask = np.zeros(len(r), dtype=bool)
    mask[order] = True
    return mask
  np.testing.assert_array_equal(F.TopK(3)(columns), _per_source_reference(columns, best_three))


def test_dedup_keeps_first_occurrence_per_source():
  keys = [b"a", b"b", b"a", b"a", b"a\x00", b"b"]
  columns = _columns([0, 0, 0, 1, 1, 0], [0.1] * 6, sample_key=keys)
  np.testing.assert_array_equal(F.Dedup()(columns), [True, True, False, True, True, False])


def test_dedup_exact_under_hash_collisions_and_other_key_types():
  assert hash(-1) == hash(-2)  # CPython: a real collision exercises the exact fallback path.
  columns = _columns([0, 0, 0, 0], [0.5] * 4, sample_key=np.array([-1, -2, -1, -2], object))
  np.testing.assert_array_equal(F.Dedup()(columns), [True, True, False, False])
  int_keys = F.GrownColumns(np.zeros(3, np.int64), np.zeros(3, np.float32), np.zeros(3, bool),
                            np.array([7, 7, 8]))
  np.testing.assert_array_equal(F.Dedup()(int_keys), [True, False, True])
  unhashable = np.empty(2, dtype=object)
  unhashable[0], unhashable[1] = [1], [2]
  with pytest.raises(ValueError, match="hashable"):
    F.Dedup()(_columns([0, 0], [0.1, 0.1], sample_key=unhashable))


def test_binary_keeps_exact_ones():
  columns = _columns([0, 0, 1], [1.0, 0.999, 1.0])
  np.testing.assert_array_equal(F.Binary()(columns), [True, False, True])


def test_chain_computes_statistics_over_survivors():
  # Source 0: rewards [1, 1, 1, 0.2]; binary drops 0.2, dedup drops the repeated b"x".
  keys = [b"x", b"x", b"y", b"z", b"w"]
  columns = _columns([0, 0, 0, 0, 1], [1.0, 1.0, 1.0, 0.2, 1.0], sample_key=keys)
  f = F.parse_filter("binary|dedup|cap:max_per_source=1")
  np.testing.assert_array_equal(f(columns), [True, False, False, False, True])
  # Percentile after a threshold: the median is taken over the survivors (0.6, 0.8, 1.0) only.
  columns = _columns([0] * 5, [0.1, 0.2, 0.6, 0.8, 1.0])
  np.testing.assert_array_equal(F.chain([F.Threshold(0.5), F.Percentile(50)])(columns),
                                [False, False, False, True, True])


def test_candidates_mask_restricts_rows():
  columns = _columns([0, 0, 0], [0.9, 0.5, 0.1])
  keep = F.TopK(1)(columns, np.array([False, True, True]))
  np.testing.assert_array_equal(keep, [False, True, False])


@pytest.mark.parametrize("option, expected_mask", [
    ("keep", [True, True, False, True]),
    ("filter", [False, True, False, True]),
    ("drop", [False, True, False, False]),
])
def test_apply_filter_original_data_options(option, expected_mask):
  columns = _columns([0, 0, 1, 1], [0.2, 0.9, 0.3, 0.95], is_original=[True, False, False, True])
  result = F.apply_filter(columns, "threshold:tau=0.8", original_data=option)
  np.testing.assert_array_equal(result.mask, expected_mask)
  assert result.num_total == 4
  assert result.num_kept == sum(expected_mask)
  assert result.num_kept_samples == 1
  assert result.num_kept_original == sum(expected_mask) - 1
  assert result.num_sources_kept == len({s for s, k in zip([0, 0, 1, 1], expected_mask) if k})
  assert result.threshold_description == "threshold:tau=0.8"


def test_keep_option_leaves_originals_out_of_per_source_statistics():
  columns = _columns([0, 0, 0], [1.0, 0.4, 0.6], is_original=[True, False, False])
  result = F.apply_filter(columns, F.TopK(1), original_data="keep")
  np.testing.assert_array_equal(result.mask, [True, False, True])


def test_apply_filter_rejects_unknown_original_data_option():
  with pytest.raises(ValueError, match=r"original_data='both'.*\['keep', 'filter', 'drop'\]"):
    F.apply_filter(_columns([0], [0.5]), F.Binary(), original_data="both")


def test_describe_empty_reports_statistics_and_suggests_threshold():
  columns = _columns([0, 1, 2, 3], [0.2, 0.4, 0.5, 0.6])
  result = F.apply_filter(columns, "threshold:tau=0.9", original_data="drop")
  assert result.is_empty
  text = F.describe_empty(result, round_index=2)
  assert "Improve step 3" in text and "threshold:tau=0.9" in text
  assert "mean 0.4250" in text and "max 0.6000" in text
  assert "threshold:tau=0.51" in text
  no_rows = F.apply_filter(_columns([0], [0.5], is_original=[True]), "threshold:tau=0.1", "drop")
  assert "No rows reached the filter" in F.describe_empty(no_rows, 0)


def test_registry_and_spec_roundtrip():
  for spec in ["threshold:tau=0.7", "percentile:p=90.0", "interpolate:gamma=0.5", "top_k:k=3",
               "binary|dedup|top_k:k=10", "dedup"]:
    f = F.parse_filter(spec)
    assert f.spec == spec
    assert F.parse_filter(f.spec) == f
  assert F.to_filter(("threshold", {"tau": 0.7})) == F.Threshold(0.7)
  chained = F.to_filter(["binary", ("cap", {"max_per_source": 2})])
  assert chained.spec == "binary|top_k:k=2"  # cap is another spelling of top_k.
  assert F.parse_filter("binary|dedup|cap:max_per_source=10") == F.parse_filter(
      "binary|dedup|top_k:k=10")
  with pytest.raises(ValueError, match=r"cap filter takes parameters \['max_per_source'\]; got "
                                       r"\['k'\] \(unknown: \['k'\]\) \(missing"):
    F.make_filter("cap", k=2)
  with pytest.raises(ValueError, match=r"Unknown filter 'treshold'; valid names: \['binary', "
                                       r"'cap', 'dedup'"):
    F.make_filter("treshold", tau=0.7)


@pytest.mark.parametrize("spec, message", [
    ("threshold:tau=1.0", r"threshold filter: tau=1.0 is outside the allowed range \[0, 1\)"),
    ("percentile:p=100", r"p=100.0 is outside the allowed range \[0, 100\)"),
    ("interpolate:gamma=1.5", r"gamma=1.5 is outside the allowed range \[0, 1\]"),
    ("top_k:k=0", r"top_k filter: k=0 is outside the allowed range \[1, inf\)"),
    ("cap:max_per_source=2.5", r"max_per_source must be an integer"),
    ("threshold:tau=high", r"value 'high' is not a number"),
    ("threshold:0.7", r"parameter '0.7' is not of the form field=value"),
    ("threshold:", r"':' must be followed by"),
    ("threshold:tau=0.7,tau=0.8", r"'tau' given twice"),
    ("threshold:t=0.7", r"threshold filter takes parameters \['tau'\].*unknown: \['t'\]"),
    ("threshold", r"missing: \['tau'\]"),
    ("binary||dedup", r"stage ''"),
])
def test_parse_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    F.parse_filter(spec)


def test_schedule_forms_and_rounds():
  schedule = F.make_schedule(["threshold:tau=0.7", ("threshold", {"tau": 0.8}), "percentile:p=90",
                              "binary|dedup|cap:max_per_source=10"])
  assert len(schedule) == 4
  assert schedule.for_round(1) == F.Threshold(0.8)
  assert schedule.specs[3] == "binary|dedup|top_k:k=10"
  with pytest.raises(ValueError, match="Improve step 5 has no filter"):
    schedule.for_round(4)
  assert F.threshold_schedule([0.0, 0.7, 0.8]).specs == [
      "threshold:tau=0.0", "threshold:tau=0.7", "threshold:tau=0.8"]


def test_schedule_validation_names_offending_steps():
  with pytest.raises(ValueError, match=r"Improve step 2 has threshold:tau=0.8 but Improve step 3 "
                                       r"has tau=0.8 \(rounds 1 and 2, 0-based\)"):
    F.threshold_schedule([0.7, 0.8, 0.8])
  with pytest.raises(ValueError, match=r"Improve step 1 has percentile:p=90.0 but Improve step 2"):
    F.make_schedule(["percentile:p=90", "percentile:p=80"])
  with pytest.raises(ValueError, match=r"interpolate:gamma=0.5 but Improve step 3 has gamma=0.2"):
    F.make_schedule(["interpolate:gamma=0.5", "interpolate:gamma=0.5", "interpolate:gamma=0.2"])
  with pytest.raises(ValueError, match=r"Filter schedule, Improve step 2: Unknown filter"):
    F.make_schedule(["threshold:tau=0.7", "bogus"])
  with pytest.raises(ValueError, match="one filter spec per Improve step"):
    F.make_schedule("threshold:tau=0.7")


def test_grown_columns_validation():
  with pytest.raises(ValueError, match=r"reward must lie in \[0, 1\], got values in \[0, 1.5\]"):
    _columns([0, 1], [0.0, 1.5])
  with pytest.raises(ValueError, match=r"is_original has shape \(1,\)"):
    F.GrownColumns(np.zeros(2, np.int64), np.zeros(2), np.zeros(1, bool), np.zeros(2))
  with pytest.raises(ValueError, match="NaN"):
    _columns([0], [np.nan])
