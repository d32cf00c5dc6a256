"""Results of a ReST run: a resumable log, the paper's Table 1, plots and TensorBoard scalars.

The ReST loop records one row per evaluation point (one policy, one split), e.g.

    {"run": "G1I2", "grow_step": 1, "improve_step": 2, "split": "validation",
     "mean_reward": 77.8, "bleu": 31.2, "chrf": 55.0, "length_ratio": 0.98, "distinct_1": 0.21,
     "distinct_2": 0.63, "num_grown": 160000, "num_kept": 41000, "threshold": "threshold:tau=0.8",
     "loss": "bc", "best_of_n": {"1": 77.8, "4": 80.1}}

Rewards are on the paper's 0-100 scale. ``results.jsonl`` is the source of truth, one line per
point (rows are keyed by (run, split)); ``results.csv`` and ``results.md`` are views of it. A run
killed between a phase's evaluation and its checkpoint evaluates that phase again when resumed,
so recording must be idempotent: every change rewrites the files whole under a temporary name
and renames them into place, so a reader or a resumed run sees the old rows or the new ones,
never a half line and never a point twice. Loading repairs files that older versions appended to
or that were damaged: a repeated point keeps its last row, and a line that does not parse is
logged, dropped from the log and kept in ``results.jsonl.rejected`` (nothing written is lost).

A rising reward can mean the policy learned to please the reward model rather than to translate
(reward hacking), so ``results.md`` also carries a reward-hacking check — `hacking_warnings` flags
rows whose reward rose while BLEU or chrF fell or the outputs got shorter or more repetitive
(thresholds: the HACK_* constants) — and a few test translations of BC next to the final policy.

Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rest_jax import fileio

ROW_FIELDS = ("run", "grow_step", "improve_step", "split", "mean_reward", "bleu", "chrf",
              "length_ratio", "distinct_1", "distinct_2", "repetition_rate", "num_grown",
              "num_kept", "threshold", "loss", "best_of_n")
JSONL_NAME, CSV_NAME, MARKDOWN_NAME = "results.jsonl", "results.csv", "results.md"
REJECTED_SUFFIX = ".rejected"  # Unparseable results.jsonl lines are moved to results.jsonl.rejected.
SAMPLES_DIR = "samples"
BC_RUN = "G0I0"

# Reward-hacking check (see `hacking_warnings`). A row is compared with BC and with the previous
# row of its split; it is flagged when its reward rose by more than HACK_REWARD_RISE points while
HACK_REWARD_RISE = 0.0
# BLEU or chrF fell by more than this many points (0-100 scale),
HACK_METRIC_DROP = 0.5
# or the length ratio left this band although BC's was inside it,
HACK_LENGTH_BAND = (0.9, 1.1)
# or the length ratio fell by more than this,
HACK_LENGTH_DROP = 0.05
# or the repetition rate (fraction of repeated tokens) rose by more than this.
HACK_REPETITION_RISE = 0.05
# Test translations shown in results.md per test split (evenly spaced over samples/*.jsonl).
NUM_SAMPLE_TRANSLATIONS = 5


def run_name(grow_step: int, improve_step: int) -> str:
  """The run label used in rows and plots: ``G1I2`` is Grow step 1, Improve step 2."""
  return f"G{grow_step}I{improve_step}"


def samples_path(workdir: str | os.PathLike, run: str, split: str) -> str:
  """Where the loop writes a policy's translations of a split (one JSON object per line)."""
  return os.path.join(os.fspath(workdir), SAMPLES_DIR, f"{run}_{split}.jsonl")


def splits_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
  """The splits of `rows`: validation first, then the others in the order first recorded."""
  splits = list(dict.fromkeys(r.get("split") for r in rows if r.get("split")))
  return sorted(splits, key=lambda split: split != "validation")


def _to_builtin(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"results row value {value!r} ({type(value).__name__}) is not JSON-serialisable")


class ResultsLog:
  """Rows of one workdir, one per (run, split), persisted to results.jsonl and results.csv.

  Each `record` rewrites both files atomically (see the module docstring), so the files always
  hold exactly one row per point whatever the moment a run is killed.
  """

  def __init__(self, workdir: str | os.PathLike):
    self.workdir = os.fspath(workdir)
    self.jsonl_path = os.path.join(self.workdir, JSONL_NAME)
    self.csv_path = os.path.join(self.workdir, CSV_NAME)
    self._rows: dict[tuple[str, str], dict[str, Any]] = {}
    fileio.makedirs(self.workdir)
    if fileio.exists(self.jsonl_path):
      self._load()

  def _load(self) -> None:
    """Reads the rows; rewrites the files when they are not exactly what `record` writes (a
    repeated point, a bad or incomplete line, a missing newline, a stale csv)."""
    data = fileio.read_bytes(self.jsonl_path)
    rejected = []
    for number, line in enumerate(data.split(b"\n"), start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        self._check_row(row)
      except (ValueError, TypeError) as e:  # UnicodeDecodeError is a ValueError.
        logging.warning("%s line %d is not a valid results row (%s: %r...); dropped from the "
                        "log and kept in %s%s.", self.jsonl_path, number, e, line[:80],
                        JSONL_NAME, REJECTED_SUFFIX)
        rejected.append(line)
        continue
      self._rows[(row["run"], row["split"])] = row
    if rejected:
      path = self.jsonl_path + REJECTED_SUFFIX
      kept = fileio.read_bytes(path) if fileio.exists(path) else b""
      fileio.write_atomic(path, kept + b"".join(line + b"\n" for line in rejected))
    if data != self._jsonl_bytes():
      fileio.write_atomic(self.jsonl_path, self._jsonl_bytes())
    csv_now = fileio.read_bytes(self.csv_path) if fileio.exists(self.csv_path) else None
    if csv_now != self._csv_bytes():
      fileio.write_atomic(self.csv_path, self._csv_bytes())

  @staticmethod
  def _check_row(row: Any) -> None:
    if not isinstance(row, dict):
      raise ValueError(f"a results row must be a dict, got {type(row).__name__}")
    for key in ("run", "split"):
      if not isinstance(row.get(key), str) or not row[key]:
        raise ValueError(f"a results row needs a non-empty string {key!r}, got "
                         f"{row.get(key)!r}")

  @property
  def rows(self) -> list[dict[str, Any]]:
    """Recorded rows, one per (run, split), in the order each point was first recorded."""
    return [dict(row) for row in self._rows.values()]

  def record(self, row: Mapping[str, Any]) -> None:
    """Records ``row``, replacing any earlier row of the same point, and rewrites the files."""
    row = dict(row)
    self._check_row(row)
    row = json.loads(json.dumps(row, default=_to_builtin))  # The stored form: Python values.
    self._rows[(row["run"], row["split"])] = row
    fileio.write_atomic(self.jsonl_path, self._jsonl_bytes())
    fileio.write_atomic(self.csv_path, self._csv_bytes())

  def _jsonl_bytes(self) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in self._rows.values()).encode("utf-8")

  def _csv_bytes(self) -> bytes:
    extra = sorted({k for row in self._rows.values() for k in row} - set(ROW_FIELDS))
    fields = list(ROW_FIELDS) + extra
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in self._rows.values():
      writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                       for k, v in row.items()})
    return buffer.getvalue().encode("utf-8")


# ----------------------------------------------------------------------------- markdown table


def _sorted_rows(rows: Iterable[Mapping[str, Any]], split: str) -> list[Mapping[str, Any]]:
  chosen = [r for r in rows if r.get("split") == split]
  return sorted(chosen, key=lambda r: (r.get("grow_step", math.inf),
                                       r.get("improve_step", math.inf), r["run"]))


def _label(row: Mapping[str, Any]) -> str:
  grow, improve = row.get("grow_step"), row.get("improve_step")
  if grow is None or improve is None:
    return row["run"]
  return "BC (G=0 I=0)" if grow == 0 and improve == 0 else f"G={grow} I={improve}"


def _number(row: Mapping[str, Any], key: str, digits: int) -> str:
  value = row.get(key)
  return "-" if value is None else f"{value:.{digits}f}"


def _grown_kept(row: Mapping[str, Any]) -> str:
  grown, kept = row.get("num_grown"), row.get("num_kept")
  if grown is None and kept is None:
    return "-"
  return " / ".join("-" if v is None else f"{v:,}" for v in (grown, kept))


def markdown_table(rows: Iterable[Mapping[str, Any]], split: str = "validation") -> str:
  """The paper's Table 1 for one split: one line per (Grow, Improve) step, BC first."""
  lines = ["| run | reward | BLEU | chrF | length ratio | distinct-2 | repetition | grown / kept "
           "| threshold | loss |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
  for row in _sorted_rows(rows, split):
    cells = [_label(row), _number(row, "mean_reward", 2), _number(row, "bleu", 2),
             _number(row, "chrf", 2), _number(row, "length_ratio", 3),
             _number(row, "distinct_2", 3), _number(row, "repetition_rate", 3),
             _grown_kept(row), row.get("threshold") or "-", row.get("loss") or "-"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _split_title(split: str) -> str:
  return {"validation": "Validation", "test": "Test"}.get(split, f"Test split `{split}`")


def write_markdown(workdir: str | os.PathLike,
                   rows: Sequence[Mapping[str, Any]] | None = None,
                   exact_reward: str | None = None) -> str:
  """Writes results.md: one table per split (validation first), the reward-hacking check and
  sample test translations (read from the workdir's samples/ files, when there are any).
  `exact_reward`: the name of the run's reward when it is an exact verifier; the hacking check
  is then replaced by a note that it does not apply."""
  rows = ResultsLog(workdir).rows if rows is None else rows
  parts = ["# ReST results\n", "Rewards are average rewards on the 0-100 scale; repetition is "
           "the fraction of repeated tokens (text_metrics.repetition_rate).\n"]
  for split in splits_of(rows):
    parts += [f"## {_split_title(split)}\n", markdown_table(rows, split)]
  if rows:
    parts += [hacking_section(rows, exact_reward)]
  samples = samples_section(workdir, rows)
  if samples:
    parts += [samples]
  path = os.path.join(os.fspath(workdir), MARKDOWN_NAME)
  fileio.write_atomic(path, "\n".join(parts).encode("utf-8"))
  return path


# ----------------------------------------------------------------------------- reward hacking


@dataclasses.dataclass(frozen=True)
class HackingWarning:
  """One flagged row: its run and split, and what moved (one reason per row compared with)."""
  run: str
  split: str
  label: str
  reasons: tuple[str, ...]

  @property
  def message(self) -> str:
    return f"{self.split} {self.label}: " + "; ".join(self.reasons)


def _is_bc(row: Mapping[str, Any]) -> bool:
  return row.get("run") == BC_RUN


def _value(row: Mapping[str, Any], key: str) -> float | None:
  value = row.get(key)
  if not isinstance(value, (int, float)) or not math.isfinite(value):
    return None
  return float(value)


def _length_moves(row, base, check_band: bool) -> list[str]:
  new, old = _value(row, "length_ratio"), _value(base, "length_ratio")
  if new is None or old is None:
    return []
  low, high = HACK_LENGTH_BAND
  if check_band and low <= old <= high and not low <= new <= high:
    return [f"length ratio {old:.3f} -> {new:.3f} (outside [{low:g}, {high:g}])"]
  if old - new > HACK_LENGTH_DROP:
    return [f"length ratio {old:.3f} -> {new:.3f} ({new - old:+.3f})"]
  return []


def _quality_moves(row, base, check_band: bool) -> list[str]:
  """What got worse from `base` to `row`: reference metrics, length, repetition."""
  moves = []
  for key, name in (("bleu", "BLEU"), ("chrf", "chrF")):
    new, old = _value(row, key), _value(base, key)
    if new is not None and old is not None and old - new > HACK_METRIC_DROP:
      moves.append(f"{name} {old:.2f} -> {new:.2f} ({new - old:+.2f})")
  moves += _length_moves(row, base, check_band)
  new, old = _value(row, "repetition_rate"), _value(base, "repetition_rate")
  if new is not None and old is not None and new - old > HACK_REPETITION_RISE:
    moves.append(f"repetition {old:.3f} -> {new:.3f} ({new - old:+.3f})")
  return moves


def _compare(row, base, check_band: bool) -> str | None:
  """A reason when the reward rose from `base` to `row` while quality fell, else None."""
  new, old = _value(row, "mean_reward"), _value(base, "mean_reward")
  if new is None or old is None or not new - old > HACK_REWARD_RISE:
    return None
  moves = _quality_moves(row, base, check_band)
  if not moves:
    return None
  return (f"vs {_label(base)}: reward {old:.2f} -> {new:.2f} ({new - old:+.2f}) while "
          + ", ".join(moves))


def hacking_warnings(rows: Iterable[Mapping[str, Any]]) -> list[HackingWarning]:
  """Rows whose reward rose while the translations got worse by reference-free or reference
  measures: the signature of reward hacking. Pure: rows in, warnings out (split, then step order).

  Every row after BC is compared with the BC row (G0I0) of its split and with the previous row
  of its split. Against a row whose reward it beats by more than HACK_REWARD_RISE, it is flagged
  when BLEU or chrF fell by more than HACK_METRIC_DROP points, the length ratio fell by more than
  HACK_LENGTH_DROP or (against BC only) left HACK_LENGTH_BAND while BC's was inside it, or the
  repetition rate rose by more than HACK_REPETITION_RISE. Missing values skip their check.
  """
  rows = list(rows)
  warnings = []
  for split in splits_of(rows):
    ordered = _sorted_rows(rows, split)
    bc = next((r for r in ordered if _is_bc(r)), None)
    for i, row in enumerate(ordered):
      if _is_bc(row):
        continue
      reasons = [_compare(row, bc, True) if bc is not None else None]
      previous = ordered[i - 1] if i > 0 else None
      if previous is not None and previous is not bc:
        reasons.append(_compare(row, previous, False))
      reasons = tuple(r for r in reasons if r)
      if reasons:
        warnings.append(HackingWarning(row["run"], split, _label(row), reasons))
  return warnings


def hacking_section(rows: Iterable[Mapping[str, Any]], exact_reward: str | None = None) -> str:
  """The "Reward-hacking check" part of results.md (a note only, for an exact verifier)."""
  if exact_reward is not None:
    return ("## Reward-hacking check\n\nNot applicable: the reward `" + exact_reward + "` is an "
            "exact verifier of the answer, which a policy cannot please without being right. "
            "BLEU, chrF and the length ratio are computed against the references as given "
            "(answers only, for answers-only tasks) and do not measure the outputs' quality; "
            "read the sample outputs.\n")
  low, high = HACK_LENGTH_BAND
  lines = ["## Reward-hacking check\n",
           f"Each row is compared with BC and with the previous row of its split. It is flagged "
           f"when its reward rose while BLEU or chrF fell by more than {HACK_METRIC_DROP:g} "
           f"points, the length ratio fell by more than {HACK_LENGTH_DROP:g} or left "
           f"[{low:g}, {high:g}] (BC inside), or the repetition rate rose by more than "
           f"{HACK_REPETITION_RISE:g}.\n"]
  warnings = hacking_warnings(rows)
  if not warnings:
    lines.append("No signs of reward hacking: no row matches these conditions.\n")
  for w in warnings:
    lines.append(f"- **{w.split} {w.label}**: " + "; ".join(w.reasons))
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- sample translations


def _read_samples(workdir: str | os.PathLike, run: str, split: str) -> list[dict] | None:
  path = samples_path(workdir, run, split)
  if not fileio.exists(path):
    return None
  text = fileio.read_bytes(path).decode("utf-8")
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def sample_indices(num_lines: int, count: int = NUM_SAMPLE_TRANSLATIONS) -> list[int]:
  """`count` evenly spaced line indices of a samples file (the same for every run)."""
  if num_lines <= 0:
    return []
  return sorted(set(np.linspace(0, num_lines - 1, min(count, num_lines)).round().astype(int)))


def _split_samples(workdir, rows, split: str) -> list[str]:
  ordered = _sorted_rows(rows, split)
  bc = _read_samples(workdir, BC_RUN, split)
  final = ordered[-1] if ordered and not _is_bc(ordered[-1]) else None
  final_samples = _read_samples(workdir, final["run"], split) if final else None
  if not bc:
    return []
  by_id = {s["source_id"]: s for s in final_samples or []}
  lines = [f"\n### {_split_title(split)}\n"]
  for number, index in enumerate(sample_indices(len(bc)), start=1):
    sample = bc[index]
    lines += [f"{number}. source ({sample['source_id']}): {sample['source']}",
              f"   - reference: {sample['reference']}",
              f"   - BC (G=0 I=0): {sample['hypothesis']}"]
    if sample["source_id"] in by_id:
      lines.append(f"   - {_label(final)}: {by_id[sample['source_id']]['hypothesis']}")
  return lines


def samples_section(workdir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> str:
  """Sample translations of every test split: source, reference, BC and the final policy."""
  parts = []
  for split in splits_of(rows):
    if split != "validation":
      parts += _split_samples(workdir, rows, split)
  if not parts:
    return ""
  return "\n".join(["## Sample translations\n",
                    f"{NUM_SAMPLE_TRANSLATIONS} fixed test examples per test split (evenly "
                    f"spaced over those in `{SAMPLES_DIR}/`), BC next to the last row's "
                    "policy."]
                   + parts) + "\n"


# ----------------------------------------------------------------------------- plots


def _save(fig: Figure, path: str | os.PathLike) -> str:
  path = os.fspath(path)
  fileio.makedirs(os.path.dirname(path) or ".")
  FigureCanvasAgg(fig)
  buffer = io.BytesIO()
  fig.savefig(buffer, dpi=100, format="png")
  fileio.write_atomic(path, buffer.getvalue())
  return path


def plot_reward_per_step(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike,
                         split: str = "validation") -> str:
  """Reward and BLEU after each step (x: G0I0, G1I0, G1I1, ...), Grow steps separated."""
  chosen = _sorted_rows(rows, split)
  if not chosen:
    raise ValueError(f"plot_reward_per_step: no rows with split={split!r}")
  labels = [run_name(r["grow_step"], r["improve_step"]) if "grow_step" in r and
            "improve_step" in r else r["run"] for r in chosen]
  x = np.arange(len(chosen))
  fig = Figure(figsize=(max(6.0, 0.7 * len(chosen)), 6.0), layout="constrained")
  axes = fig.subplots(2, 1, sharex=True)
  for ax, key, title in ((axes[0], "mean_reward", "average reward (0-100)"),
                         (axes[1], "bleu", "BLEU")):
    values = [np.nan if r.get(key) is None else r[key] for r in chosen]
    ax.plot(x, values, marker="o")
    ax.set_ylabel(title)
    ax.grid(alpha=0.3)
    for i in range(1, len(chosen)):
      if chosen[i].get("grow_step") != chosen[i - 1].get("grow_step"):
        ax.axvline(i - 0.5, color="gray", linestyle=":")
  axes[0].set_title(f"ReST, {split} split")
  axes[1].set_xticks(x, labels)
  return _save(fig, path)


def plot_reward_vs_chrf(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike,
                        split: str = "validation") -> str:
  """Mean reward against corpus chrF, one point per row, arrows in run order.

  Reward and chrF moving together (arrows up and right) is real improvement; arrows going up
  and left are the reward rising while the translations get worse: reward hacking.
  """
  chosen = [r for r in _sorted_rows(rows, split)
            if _value(r, "mean_reward") is not None and _value(r, "chrf") is not None]
  if not chosen:
    raise ValueError(f"plot_reward_vs_chrf: no rows with split={split!r} and both mean_reward "
                     "and chrf")
  x = [r["chrf"] for r in chosen]
  y = [r["mean_reward"] for r in chosen]
  fig = Figure(figsize=(6.0, 4.5), layout="constrained")
  ax = fig.subplots()
  ax.scatter(x, y, color="tab:blue", zorder=3)
  for i in range(1, len(chosen)):
    ax.annotate("", xy=(x[i], y[i]), xytext=(x[i - 1], y[i - 1]),
                arrowprops=dict(arrowstyle="->", color="tab:gray", shrinkA=4, shrinkB=4))
  labels: dict[tuple[float, float], list[str]] = {}  # Runs at the same point share a label.
  for row, xi, yi in zip(chosen, x, y):
    labels.setdefault((xi, yi), []).append(row["run"])
  for (xi, yi), runs in labels.items():
    ax.annotate(", ".join(runs), (xi, yi), textcoords="offset points", xytext=(5, 5),
                fontsize=8)
  ax.margins(0.15)
  ax.set_xlabel("chrF (vs references)")
  ax.set_ylabel("average reward (0-100)")
  ax.set_title(f"Reward vs chrF, {split} split (arrows: run order)")
  ax.grid(alpha=0.3)
  return _save(fig, path)


def plot_reward_histograms(rewards_by_grow_step: Mapping[int, np.ndarray],
                           thresholds_by_grow_step: Mapping[int, Sequence[float]],
                           path: str | os.PathLike) -> str:
  """Grown-data reward histograms, one panel per Grow step, with the Improve thresholds."""
  if not rewards_by_grow_step:
    raise ValueError("plot_reward_histograms: rewards_by_grow_step is empty")
  unknown = sorted(set(thresholds_by_grow_step) - set(rewards_by_grow_step))
  if unknown:
    raise ValueError(f"plot_reward_histograms: thresholds given for Grow steps {unknown} that "
                     f"have no rewards; Grow steps with rewards: {sorted(rewards_by_grow_step)}")
  steps = sorted(rewards_by_grow_step)
  fig = Figure(figsize=(4.5 * len(steps), 3.5), layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(steps), sharey=True))
  for ax, step in zip(axes, steps):
    rewards = np.asarray(rewards_by_grow_step[step], dtype=np.float64).reshape(-1)
    ax.hist(rewards, bins=np.linspace(0.0, 1.0, 41), color="tab:blue", alpha=0.7)
    for i, tau in enumerate(thresholds_by_grow_step.get(step, ())):
      ax.axvline(tau, color="tab:orange", linestyle="--",
                 label="thresholds" if i == 0 else None)
      ax.annotate(f"{tau:g}", (tau, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                  ha="center", va="bottom")
    if rewards.size:
      ax.axvline(rewards.mean(), color="tab:red", label=f"mean {rewards.mean():.3f}")
    ax.set_title(f"Grow step {step} ({rewards.size:,} samples)", pad=12)
    ax.set_xlabel("reward")
    ax.set_xlim(0.0, 1.0)
    ax.legend(fontsize=7)
  axes[0].set_ylabel("samples")
  return _save(fig, path)


def plot_best_of_n(curves: Mapping[str, Sequence[tuple[int, float]]],
                   path: str | os.PathLike) -> str:
  """Reward of the best of N samples against N (log scale), one line per policy."""
  if not curves:
    raise ValueError("plot_best_of_n: curves is empty")
  fig = Figure(figsize=(6.0, 4.0), layout="constrained")
  ax = fig.subplots()
  for name, points in curves.items():
    points = sorted(points)
    if not points or any(n < 1 for n, _ in points):
      raise ValueError(f"plot_best_of_n: curve {name!r} needs (N, reward) points with N >= 1, "
                       f"got {points}")
    ax.plot([n for n, _ in points], [r for _, r in points], marker="o", label=name)
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.set_xlabel("N (samples per source)")
  ax.set_ylabel("best-of-N reward (0-100)")
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)


# ----------------------------------------------------------------------------- TensorBoard


def _import_tensorflow():
  """Imports TensorFlow for its summary writer only, hiding accelerators from it.

  TF would otherwise reserve most of the GPU memory that JAX needs. If TF's runtime was already
  initialised elsewhere in the process, its device setup is left as it is.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass
  return tf


class TensorBoardWriter:
  """Scalars per step in TensorBoard event files under ``logdir``.

  Writes through ``tf.summary.write`` with the scalars plugin metadata, i.e. the records
  ``tf.summary.scalar`` produces, without needing the tensorboard package at write time.

  One value per (tag, step) across restarts: a resumed run repeats the steps after its last
  checkpoint (the same values, as resume is deterministic), so a new writer first reads the
  (tag, step) pairs already in ``logdir``'s event files — up to a record cut short by a kill —
  and skips them.
  """

  def __init__(self, logdir: str | os.PathLike):
    self._tf = _import_tensorflow()
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
    self.logdir = os.fspath(logdir)
    self._logged = self._logged_points()
    self._writer = self._tf.summary.create_file_writer(self.logdir)
    self._metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))

  def _logged_points(self) -> set[tuple[str, int]]:
    points = set()
    pattern = os.path.join(self.logdir, "events.out.tfevents.*")
    for path in sorted(self._tf.io.gfile.glob(pattern)):
      try:
        for event in self._tf.compat.v1.train.summary_iterator(path):
          points.update((value.tag, int(event.step)) for value in event.summary.value)
      except self._tf.errors.DataLossError:  # The last record of a killed run's file.
        pass
    return points

  def scalar(self, tag: str, value: float, step: int) -> None:
    value = float(value)
    if (tag, int(step)) in self._logged:
      return
    self._logged.add((tag, int(step)))
    with self._writer.as_default():
      self._tf.summary.write(tag, self._tf.constant(value, self._tf.float32), step=int(step),
                             metadata=self._metadata)

  def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
    for tag, value in values.items():
      self.scalar(f"{prefix}{tag}", value, step)

  def write_row(self, row: Mapping[str, Any], step: int) -> None:
    """Logs a results row's numeric fields as ``<split>/<field>``."""
    numeric = {k: v for k, v in row.items() if k not in ("grow_step", "improve_step")
               and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    self.scalars(numeric, step, prefix=f"{row.get('split', 'eval')}/")

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()

  def __enter__(self) -> "TensorBoardWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
