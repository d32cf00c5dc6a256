"""Filters that choose which grown samples an Improve round trains on.

ReST separates Grow (sample and score once) from Improve (train on a filtered subset). Each Improve
round picks its subset with a filter; a *schedule* gives one filter per round so the bar rises as
the policy improves. This module holds the filters (small frozen dataclasses, one per rule, whose
selection is numpy over column arrays: they can be applied, inspected and re-applied to grown data
on disk without touching the model), the spec-string parser that builds them from gin, the
schedule check (a round's bar may not fall), and `apply_filter`, which applies one round's filter
under the `original_data` option (what happens to the human pairs) and reports the counts.

Legend for array sizes: M = number of grown rows (policy samples plus original human pairs).

A filter is called as ``filter(columns, candidates) -> keep mask [M] bool``. ``candidates`` marks
the rows that reach the filter (all rows if None); the result is always a subset of it, and
per-source statistics (percentiles, means, maxima, ranks) are computed over the candidates only.
That is what makes ``chain`` compose: each stage sees only the survivors of the previous one.

Spec strings (one Improve round, usable from gin):

    round  := stage ("|" stage)*          stages run left to right on the survivors
    stage  := NAME [":" param ("," param)*]
    param  := FIELD "=" NUMBER

e.g. ``"threshold:tau=0.7"``, ``"percentile:p=90"``, ``"binary|dedup|cap:max_per_source=10"``.
Every filter's ``spec`` property prints this form, and parsing it gives the same filter back.
``cap:max_per_source=N`` (ReST-EM's "at most N solutions per problem") is another spelling of
``top_k:k=N``; it builds the same filter, whose spec prints as ``top_k:k=N``.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import Any, ClassVar, Mapping, Sequence, Union

import numpy as np

ORIGINAL_DATA_OPTIONS = ("keep", "filter", "drop")


@dataclasses.dataclass(frozen=True)
class GrownColumns:
  """Grown data as column arrays, the only input filters need.

  Attributes:
    source_id: [M] int64 stable id of the source sentence.
    reward: [M] float32 reward in [0, 1].
    is_original: [M] bool, True for the human (source, reference) pairs of the original data D.
    sample_key: [M] identity of the output (token bytes, text or an integer hash) for dedup.
  """
  source_id: np.ndarray
  reward: np.ndarray
  is_original: np.ndarray
  sample_key: np.ndarray

  def __post_init__(self):
    source_id = np.asarray(self.source_id)
    reward = np.asarray(self.reward, dtype=np.float32)
    is_original = np.asarray(self.is_original)
    sample_key = np.asarray(self.sample_key)
    if source_id.ndim != 1:
      raise ValueError(f"GrownColumns.source_id must be 1-D, got shape {source_id.shape}")
    if not np.issubdtype(source_id.dtype, np.integer):
      raise ValueError(f"GrownColumns.source_id must hold integers, got dtype {source_id.dtype}")
    num_rows = source_id.shape[0]
    for name, array in (("reward", reward), ("is_original", is_original),
                        ("sample_key", sample_key)):
      if array.shape != (num_rows,):
        raise ValueError(f"GrownColumns.{name} has shape {array.shape}; every column must have "
                         f"shape ({num_rows},) like source_id")
    if is_original.dtype != np.bool_:
      raise ValueError(f"GrownColumns.is_original must be bool, got dtype {is_original.dtype}")
    if num_rows and not np.all(np.isfinite(reward)):
      raise ValueError("GrownColumns.reward contains NaN or inf; rewards must lie in [0, 1]")
    if num_rows and (reward.min() < 0.0 or reward.max() > 1.0):
      raise ValueError(f"GrownColumns.reward must lie in [0, 1], got values in "
                       f"[{reward.min():g}, {reward.max():g}]")
    object.__setattr__(self, "source_id", source_id.astype(np.int64, copy=False))
    object.__setattr__(self, "reward", reward)
    object.__setattr__(self, "is_original", is_original)
    object.__setattr__(self, "sample_key", sample_key)

  @property
  def num_rows(self) -> int:
    return int(self.source_id.shape[0])


# ----------------------------------------------------------------------------- per-source helpers


def _sort_within_source(source_id: np.ndarray, reward: np.ndarray, descending: bool):
  """Sorts rows by (source, reward); ties keep their original (index) order.

  Returns (order, starts, counts, rank): ``order`` sorts the rows, ``starts``/``counts`` delimit
  each source's run in sorted order, and ``rank[row]`` is the row's 0-based place in its source.
  """
  reward_key = -reward if descending else reward
  order = np.lexsort((reward_key, source_id))  # Stable, so equal rewards stay in index order.
  sorted_ids = source_id[order]
  is_start = np.ones(len(order), dtype=bool)
  is_start[1:] = sorted_ids[1:] != sorted_ids[:-1]
  starts = np.flatnonzero(is_start)
  counts = np.diff(np.append(starts, len(order)))
  rank = np.empty(len(order), dtype=np.int64)
  rank[order] = np.arange(len(order)) - np.repeat(starts, counts)
  return order, starts, counts, rank


def _per_row(values_per_source: np.ndarray, order: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Broadcasts one value per source (in sorted-source order) back to every row."""
  out = np.empty(len(order), dtype=values_per_source.dtype)
  out[order] = np.repeat(values_per_source, counts)
  return out


# ----------------------------------------------------------------------------- parameter checks


def _check_number(filter_name: str, field: str, value: Any, low: float, high: float,
                  high_inclusive: bool) -> float:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise ValueError(f"{filter_name} filter: {field} must be a number, got {value!r} "
                     f"({type(value).__name__})")
  value = float(value)
  in_range = low <= value <= high if high_inclusive else low <= value < high
  if not in_range:
    bracket = "]" if high_inclusive else ")"
    raise ValueError(f"{filter_name} filter: {field}={value!r} is outside the allowed range "
                     f"[{low:g}, {high:g}{bracket}")
  return value


def _check_positive_int(filter_name: str, field: str, value: Any) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{filter_name} filter: {field} must be an integer >= 1, got {value!r} "
                     f"({type(value).__name__})")
  if value < 1:
    raise ValueError(f"{filter_name} filter: {field}={value} is outside the allowed range "
                     f"[1, inf)")
  return int(value)


# ----------------------------------------------------------------------------- filters


class Filter(abc.ABC):
  """Base class: subclasses are frozen dataclasses that implement ``_select``."""
  name: ClassVar[str]

  def __call__(self, columns: GrownColumns, candidates: np.ndarray | None = None) -> np.ndarray:
    """Returns the keep mask [M] bool, a subset of ``candidates`` (all rows if None)."""
    if candidates is None:
      return self._select(columns.source_id, columns.reward, columns.sample_key)
    candidates = np.asarray(candidates, dtype=bool)
    if candidates.shape != (columns.num_rows,):
      raise ValueError(f"{self.spec}: candidates mask has shape {candidates.shape}, expected "
                       f"({columns.num_rows},)")
    index = np.flatnonzero(candidates)
    keep = np.zeros(columns.num_rows, dtype=bool)
    if index.size:
      local = self._select(columns.source_id[index], columns.reward[index],
                           columns.sample_key[index])
      keep[index[local]] = True
    return keep

  @abc.abstractmethod
  def _select(self, source_id: np.ndarray, reward: np.ndarray,
              sample_key: np.ndarray) -> np.ndarray:
    """Keep mask over the given (already restricted) rows."""

  @property
  def spec(self) -> str:
    """The round's spec string, e.g. ``threshold:tau=0.7``; parsing it gives this filter."""
    params = ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
    return f"{self.name}:{params}" if params else self.name


@dataclasses.dataclass(frozen=True)
class Threshold(Filter):
  """Global threshold, the paper's filter: keep R(x, y) > tau (strict, as in the paper).

  tau lies in [0, 1). tau = 0 keeps everything, reward-0 samples included: the paper's "τ=0
  keeps everything", so its "G=1 I=0" row trains on the whole grown set. (A strict R > 0 would
  silently drop the reward-0 samples, e.g. every truncated sample scored 0 by Grow.)
  """
  tau: float
  name: ClassVar[str] = "threshold"

  def __post_init__(self):
    object.__setattr__(self, "tau", _check_number(self.name, "tau", self.tau, 0.0, 1.0, False))

  def _select(self, source_id, reward, sample_key):
    if self.tau == 0.0:
      return np.ones(reward.shape, dtype=bool)
    return reward > self.tau


@dataclasses.dataclass(frozen=True)
class Percentile(Filter):
  """Per source, keep rewards >= the p-th percentile of that source's rewards.

  Percentiles use numpy's default linear interpolation, so p = 0 keeps everything and a high p
  keeps at least the best sample of each source: hard sources are never starved.
  """
  p: float
  name: ClassVar[str] = "percentile"

  def __post_init__(self):
    object.__setattr__(self, "p", _check_number(self.name, "p", self.p, 0.0, 100.0, False))

  def _select(self, source_id, reward, sample_key):
    reward = reward.astype(np.float64)
    order, starts, counts, _ = _sort_within_source(source_id, reward, descending=False)
    sorted_reward = reward[order]
    position = self.p / 100.0 * (counts - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, counts - 1)
    frac = position - lower
    a, b = sorted_reward[starts + lower], sorted_reward[starts + upper]
    # The same two-sided linear interpolation as np.percentile, so the cut matches it exactly.
    level = np.where(frac >= 0.5, b - (b - a) * (1.0 - frac), a + (b - a) * frac)
    return reward >= _per_row(level, order, counts)


@dataclasses.dataclass(frozen=True)
class Interpolate(Filter):
  """Per source, keep R >= tau(x) = gamma * max_y R(x, y) + (1 - gamma) * mean_y R(x, y)."""
  gamma: float
  name: ClassVar[str] = "interpolate"

  def __post_init__(self):
    object.__setattr__(self, "gamma",
                       _check_number(self.name, "gamma", self.gamma, 0.0, 1.0, True))

  def _select(self, source_id, reward, sample_key):
    reward = reward.astype(np.float64)
    order, starts, counts, _ = _sort_within_source(source_id, reward, descending=False)
    sorted_reward = reward[order]
    best = sorted_reward[starts + counts - 1]
    mean = np.add.reduceat(sorted_reward, starts) / counts
    # Mathematically tau <= max; the clamp guards against rounding in the mean.
    level = np.minimum(self.gamma * best + (1.0 - self.gamma) * mean, best)
    return reward >= _per_row(level, order, counts)


def _best_per_source(source_id: np.ndarray, reward: np.ndarray, limit: int) -> np.ndarray:
  _, _, _, rank = _sort_within_source(source_id, reward, descending=True)
  return rank < limit


@dataclasses.dataclass(frozen=True)
class TopK(Filter):
  """Per source, the k highest rewards; equal rewards are broken by row order (earlier first).

  Also spelled ``cap:max_per_source=k``: run last in a chain (``binary|dedup|cap:...``) it caps
  the verified solutions kept per problem, as ReST-EM does (at most 10 there).
  """
  k: int
  name: ClassVar[str] = "top_k"

  def __post_init__(self):
    object.__setattr__(self, "k", _check_positive_int(self.name, "k", self.k))

  def _select(self, source_id, reward, sample_key):
    return _best_per_source(source_id, reward, self.k)


@dataclasses.dataclass(frozen=True)
class Dedup(Filter):
  """Keeps the first occurrence (lowest row) of each (source_id, sample_key) pair."""
  name: ClassVar[str] = "dedup"

  def _select(self, source_id, reward, sample_key):
    if sample_key.dtype == object:
      # Hashing is ~10x faster than sorting Python objects; equal hashes are then checked for
      # equal keys, and a (rare) collision falls back to exact codes, so the result is exact.
      try:
        key_code = np.frompyfunc(hash, 1, 1)(sample_key).astype(np.int64)
      except TypeError as e:
        raise ValueError(f"dedup filter: sample_key values must be hashable (bytes, str, int or "
                         f"tuple; convert token arrays with .tobytes()): {e}") from e
      order, same_as_previous = _group_adjacent(source_id, key_code)
      sorted_keys = sample_key[order]
      if not np.all(sorted_keys[1:][same_as_previous[1:]]
                    == sorted_keys[:-1][same_as_previous[1:]]):
        key_code = _exact_key_codes(sample_key)
        order, same_as_previous = _group_adjacent(source_id, key_code)
    else:
      order, same_as_previous = _group_adjacent(source_id, _exact_key_codes(sample_key))
    keep = np.zeros(len(order), dtype=bool)
    keep[order[~same_as_previous]] = True
    return keep


def _exact_key_codes(sample_key: np.ndarray) -> np.ndarray:
  try:
    return np.unique(sample_key, return_inverse=True)[1].reshape(-1)
  except TypeError as e:
    raise ValueError(f"dedup filter: sample_key values must be mutually comparable (all bytes, "
                     f"all str or all integers); got dtype {sample_key.dtype}: {e}") from e


def _group_adjacent(source_id: np.ndarray, key_code: np.ndarray):
  """Stable sort by (source_id, key_code); marks sorted rows equal to their predecessor."""
  order = np.lexsort((key_code, source_id))
  same_as_previous = np.zeros(len(order), dtype=bool)
  same_as_previous[1:] = ((source_id[order][1:] == source_id[order][:-1])
                          & (key_code[order][1:] == key_code[order][:-1]))
  return order, same_as_previous


@dataclasses.dataclass(frozen=True)
class Binary(Filter):
  """Keeps reward == 1, for verifier (correct / incorrect) rewards as in ReST-EM."""
  name: ClassVar[str] = "binary"

  def _select(self, source_id, reward, sample_key):
    return reward == 1.0


@dataclasses.dataclass(frozen=True)
class Chain(Filter):
  """Applies filters in order, each to the survivors of the previous one."""
  filters: tuple[Filter, ...]
  name: ClassVar[str] = "chain"

  def __post_init__(self):
    flat = []
    for f in self.filters:
      if not isinstance(f, Filter):
        raise ValueError(f"chain filter: every stage must be a Filter, got {f!r}")
      flat.extend(f.filters if isinstance(f, Chain) else (f,))
    if not flat:
      raise ValueError("chain filter: needs at least one stage")
    object.__setattr__(self, "filters", tuple(flat))

  def __call__(self, columns, candidates=None):
    keep = None if candidates is None else np.asarray(candidates, dtype=bool)
    for f in self.filters:
      keep = f(columns, keep)
    return keep

  def _select(self, source_id, reward, sample_key):
    columns = GrownColumns(source_id, reward, np.zeros(len(source_id), bool), sample_key)
    return self(columns)

  @property
  def spec(self) -> str:
    return "|".join(f.spec for f in self.filters)


def chain(filters: Sequence[Filter]) -> Chain:
  return Chain(tuple(filters))


FILTERS: dict[str, type[Filter]] = {
    cls.name: cls for cls in (Threshold, Percentile, Interpolate, TopK, Dedup, Binary)
}
# Other spellings: name -> (filter name, {its parameter name: the filter's field}).
ALIASES: dict[str, tuple[str, dict[str, str]]] = {"cap": ("top_k", {"max_per_source": "k"})}


# ----------------------------------------------------------------------------- registry and specs


def _check_parameter_names(name: str, fields: Sequence[str], params: Mapping[str, Any]) -> None:
  unknown = sorted(set(params) - set(fields))
  missing = [f for f in fields if f not in params]
  if unknown or missing:
    raise ValueError(f"{name} filter takes parameters {list(fields) or '(none)'}; got "
                     f"{sorted(params)}" + (f" (unknown: {unknown})" if unknown else "")
                     + (f" (missing: {missing})" if missing else ""))


def make_filter(name: str, **params: Any) -> Filter:
  """Builds a registered filter by name, e.g. ``make_filter("threshold", tau=0.7)``."""
  if name in ALIASES:
    target, renamed = ALIASES[name]
    _check_parameter_names(name, list(renamed), params)
    return make_filter(target, **{renamed[p]: _check_positive_int(name, p, v)
                                  for p, v in params.items()})
  if name not in FILTERS:
    raise ValueError(f"Unknown filter {name!r}; valid names: {sorted([*FILTERS, *ALIASES])}")
  cls = FILTERS[name]
  _check_parameter_names(name, [f.name for f in dataclasses.fields(cls)], params)
  return cls(**params)


_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _parse_value(text: str, where: str) -> int | float:
  for convert in (int, float):
    try:
      return convert(text)
    except ValueError:
      pass
  raise ValueError(f"{where}: value {text!r} is not a number")


def parse_filter(text: str) -> Filter:
  """Parses one round's spec string (see the module docstring for the grammar)."""
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f"Filter spec must be a non-empty string, got {text!r}")
  stages = []
  for stage in text.split("|"):
    where = f"filter spec {text!r}, stage {stage.strip()!r}"
    name, colon, param_text = stage.strip().partition(":")
    name = name.strip()
    if not _NAME.match(name):
      raise ValueError(f"{where}: expected 'name' or 'name:field=value,...', e.g. "
                       f"'threshold:tau=0.7'; valid names: {sorted([*FILTERS, *ALIASES])}")
    params = {}
    if param_text.strip():
      for item in param_text.split(","):
        field, eq, value = item.partition("=")
        field = field.strip()
        if not eq or not _NAME.match(field) or not value.strip():
          raise ValueError(f"{where}: parameter {item.strip()!r} is not of the form field=value")
        if field in params:
          raise ValueError(f"{where}: parameter {field!r} given twice")
        params[field] = _parse_value(value.strip(), where)
    elif colon:
      raise ValueError(f"{where}: ':' must be followed by field=value parameters")
    stages.append(make_filter(name, **params))
  return stages[0] if len(stages) == 1 else Chain(tuple(stages))


FilterSpec = Union[Filter, str, tuple, list]


def to_filter(spec: FilterSpec) -> Filter:
  """Accepts a Filter, a spec string, a ``(name, {params})`` pair, or a list of those (a chain)."""
  if isinstance(spec, Filter):
    return spec
  if isinstance(spec, str):
    return parse_filter(spec)
  if (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
      and isinstance(spec[1], Mapping)):
    return make_filter(spec[0], **dict(spec[1]))
  if isinstance(spec, (list, tuple)) and spec:
    return Chain(tuple(to_filter(s) for s in spec))
  raise ValueError(f"Cannot build a filter from {spec!r}: use a spec string like "
                   f"'threshold:tau=0.7', a (name, {{params}}) pair, or a list of those")


# ----------------------------------------------------------------------------- schedules

# Filters whose strength is one number that should rise over Improve rounds: (field, strict).
_RISING_LEVELS = {Threshold: ("tau", True), Percentile: ("p", False), Interpolate: ("gamma", False)}


@dataclasses.dataclass(frozen=True)
class FilterSchedule:
  """One filter per Improve round; ``rounds[i]`` is used by 0-based round i (Improve step i+1)."""
  rounds: tuple[Filter, ...]

  def __post_init__(self):
    if not self.rounds:
      raise ValueError("Filter schedule needs at least one Improve step")
    _check_rising(self.rounds)

  def __len__(self) -> int:
    return len(self.rounds)

  def for_round(self, round_index: int) -> Filter:
    if not 0 <= round_index < len(self.rounds):
      raise ValueError(f"Improve step {round_index + 1} has no filter: the schedule has "
                       f"{len(self.rounds)} step(s): {self.specs}")
    return self.rounds[round_index]

  @property
  def specs(self) -> list[str]:
    return [f.spec for f in self.rounds]


def _stages(f: Filter) -> tuple[Filter, ...]:
  return f.filters if isinstance(f, Chain) else (f,)


def _check_rising(rounds: Sequence[Filter]) -> None:
  """Thresholds must rise strictly; percentiles and gammas must not fall (per filter kind)."""
  problems = []
  for cls, (field, strict) in _RISING_LEVELS.items():
    levels = []
    for i, f in enumerate(rounds):
      stages = [s for s in _stages(f) if isinstance(s, cls)]
      if stages:
        levels.append((i, getattr(stages[0], field)))
    for (i, a), (j, b) in zip(levels, levels[1:]):
      if (b <= a) if strict else (b < a):
        problems.append(f"Improve step {i + 1} has {cls.name}:{field}={a!r} but Improve step "
                        f"{j + 1} has {field}={b!r} (rounds {i} and {j}, 0-based)")
  if problems:
    raise ValueError("Filter schedule must tighten from one Improve step to the next (global "
                     "thresholds strictly increasing; percentiles and interpolation gammas "
                     "non-decreasing): " + "; ".join(problems))


def make_schedule(spec: Sequence[FilterSpec]) -> FilterSchedule:
  """Builds a schedule from one spec per Improve round (see ``to_filter`` for the forms).

  Example: ``make_schedule(["threshold:tau=0.7", "threshold:tau=0.8"])`` or, for ReST-EM,
  ``make_schedule(["binary|dedup|cap:max_per_source=10"])``.
  """
  if isinstance(spec, (str, Filter)) or not isinstance(spec, Sequence):
    raise ValueError(f"Filter schedule must be a list with one filter spec per Improve step, "
                     f"got {spec!r}")
  rounds = []
  for i, round_spec in enumerate(spec):
    try:
      rounds.append(to_filter(round_spec))
    except ValueError as e:
      raise ValueError(f"Filter schedule, Improve step {i + 1}: {e}") from e
  return FilterSchedule(tuple(rounds))


def threshold_schedule(taus: Sequence[float]) -> FilterSchedule:
  """The paper's schedule: global thresholds, e.g. ``[0.0, 0.7, 0.8, 0.9, 0.95]``."""
  return make_schedule([Threshold(tau) for tau in taus])


# ----------------------------------------------------------------------------- applying a filter


@dataclasses.dataclass(frozen=True)
class FilterResult:
  """Keep mask plus the counts an Improve round logs.

  ``reward_mean``/``reward_max``/``num_candidates`` describe the rows that reached the filter.
  """
  mask: np.ndarray
  num_total: int
  num_kept: int
  num_kept_samples: int
  num_kept_original: int
  num_sources_kept: int
  threshold_description: str
  original_data: str
  num_candidates: int
  reward_mean: float
  reward_max: float

  @property
  def is_empty(self) -> bool:
    return self.num_kept == 0


def apply_filter(columns: GrownColumns, filter_: FilterSpec,
                 original_data: str = "keep") -> FilterResult:
  """Applies one round's filter to grown data.

  original_data: "keep" keeps every human pair regardless of the filter (the paper's D_g
  contains D) and leaves them out of per-source statistics; "filter" treats them like samples;
  "drop" excludes them.
  """
  if original_data not in ORIGINAL_DATA_OPTIONS:
    raise ValueError(f"original_data={original_data!r} is not allowed; allowed values: "
                     f"{list(ORIGINAL_DATA_OPTIONS)}")
  filter_ = to_filter(filter_)
  is_original = columns.is_original
  candidates = None if original_data == "filter" else ~is_original
  mask = filter_(columns, candidates)
  if original_data == "keep":
    mask = mask | is_original
  reached = columns.reward if candidates is None else columns.reward[candidates]
  return FilterResult(
      mask=mask,
      num_total=columns.num_rows,
      num_kept=int(mask.sum()),
      num_kept_samples=int(np.count_nonzero(mask & ~is_original)),
      num_kept_original=int(np.count_nonzero(mask & is_original)),
      num_sources_kept=int(np.unique(columns.source_id[mask]).size),
      threshold_description=filter_.spec,
      original_data=original_data,
      num_candidates=int(reached.size),
      reward_mean=float(reached.mean(dtype=np.float64)) if reached.size else float("nan"),
      reward_max=float(reached.max()) if reached.size else float("nan"),
  )


def describe_empty(result: FilterResult, round_index: int) -> str:
  """Explains a round that kept nothing (or no policy samples) and what to try instead."""
  step = f"Improve step {round_index + 1}"
  text = (f"{step}: filter {result.threshold_description!r} kept {result.num_kept} of "
          f"{result.num_total} grown rows ({result.num_kept_samples} policy samples, "
          f"{result.num_kept_original} original pairs; original_data={result.original_data!r}).")
  if result.num_candidates == 0:
    return text + (" No rows reached the filter: the grown set has no policy samples"
                   + (" and the original pairs were dropped." if result.original_data == "drop"
                      else ".") + " Check that Grow wrote its shards.")
  text += (f" Rewards of the {result.num_candidates} filtered rows: mean "
           f"{result.reward_mean:.4f}, max {result.reward_max:.4f}.")
  stage_names = [stage.partition(":")[0] for stage in result.threshold_description.split("|")]
  if Binary.name in stage_names:
    return text + (" No sample scored reward 1; sample more outputs per source or check the "
                   "verifier.")
  if result.reward_max <= 0.0:
    return text + (" Every reward is 0 and thresholds tau > 0 keep only R > tau; check the "
                   "reward function before lowering thresholds.")
  return text + (f" Lower the threshold below the max reward {result.reward_max:.4f}; a useful "
                 f"threshold lies between the mean ({result.reward_mean:.4f}) and the max, e.g. "
                 f"threshold:tau={_suggest_tau(result.reward_mean, result.reward_max)}.")


def _suggest_tau(mean: float, best: float) -> str:
  """A two-decimal threshold between the mean and the max, strictly below the max."""
  tau = np.floor(100 * (mean + best) / 2) / 100
  if tau >= best:
    tau = np.ceil(100 * best) / 100 - 0.01
  return f"{max(tau, 0.0):.2f}"
