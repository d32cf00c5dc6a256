"""ReST against online RL per sample drawn, per reward call and per second, over seeds.

The paper's efficiency argument: ReST reuses each Grow step's samples over several Improve
rounds, so it should reach a given reward with fewer samples and reward-model calls than an
online learner that samples afresh every step. Both kinds of run record their cost on one
scale: a ReST row (G g I i) carries the samples drawn and reward calls of its Grow steps 1..g
and the wall seconds after BC (`phases.rest_wall_seconds`); an online run's final row, and each
point of its `online_curve.jsonl`, carry the same three (`rest_jax.online`).

The score plotted against cost is the one both kinds of run select their policy by: the run's
reward, greedy, on the validation subset early stopping uses (a row's `early_stopping_reward`,
a curve point's `validation_reward`), as the change from the same seed's BC policy. The table
reports the rows' evaluation (the reported reward, `EvalConfig.reward`, on validation and every
test split) as mean ± sample standard deviation over seeds, with the change from each seed's own
BC (paired) beside it.

`scripts/aggregate_sweep.py` writes `sweep_cost.md` and `reward_vs_cost.png` with this module
when a sweep's rows carry costs (a sweep with an online point, e.g.
experiments/sweeps/arith_rest_vs_online.sweep).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rest_jax import online

COSTS = (("samples_drawn", "samples drawn"), ("reward_calls", "reward calls"),
         ("wall_s", "wall seconds after BC"))
BC_RUN = "G0I0"


def has_costs(results: Sequence[Mapping[str, Any]]) -> bool:
  """Whether any point recorded a cost (ReST rows after Grow, or an online phase)."""
  return any(row.get("samples_drawn") is not None for res in results for row in res["rows"])


def read_curve(workdir: str) -> list[dict[str, Any]]:
  """An online run's curve points ({step, samples_drawn, reward_calls, wall_s,
  validation_reward}), in step order; [] for a ReST run. A garbled line is skipped."""
  path = os.path.join(workdir, online.CURVE_NAME)
  if not os.path.exists(path):
    return []
  points = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        point = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(point, dict) and "step" in point:
        points[int(point["step"])] = point  # A resumed run may repeat a step: the last counts.
  return [points[s] for s in sorted(points)]


def mean_std(values: Sequence[float]) -> tuple[float, float | None, int]:
  """(mean, sample standard deviation (ddof=1; None for one value), n)."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None), len(v)


def format_mean_std(stat: tuple[float, float | None, int] | None, fmt: str = "{:.2f}",
          exact_if_equal: bool = False) -> str:
  """mean ± std; the mean alone for one seed, or (`exact_if_equal`, for counts) equal seeds."""
  if stat is None:
    return "-"
  mean, std, _ = stat
  if std is None or (exact_if_equal and std == 0):
    return fmt.format(mean)
  return f"{fmt.format(mean)} ± {fmt.format(std)}"


def _validation(res: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
  return {r["run"]: r for r in res["rows"] if r.get("split") == "validation"}


def _is_online(row: Mapping[str, Any]) -> bool:
  return "grow_step" not in row


def series(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
  """Score against cost per group, over its seeds: [{label, kind ('rest'|'online'), points:
  [{cost: (mean, std, n), ..., 'score': (mean, std, n)}]}], where a seed's score is its change
  from its own BC policy's (paired: seeds' BC policies differ far more than what ReST or online
  RL adds). A ReST group gives one point per run (BC at cost 0, then G1I0, ...), an online group
  one per curve step (step 0 is BC). A point averages the seeds that reached it."""
  out = []
  for group, members in groups.items():
    curves = [read_curve(res["workdir"]) for res in members]
    if any(curves):
      by_step: dict[int, list[dict[str, Any]]] = {}
      for curve in curves:
        start = next((p.get("validation_reward") for p in curve if p["step"] == 0), None)
        for p in curve:
          by_step.setdefault(int(p["step"]), []).append(
              {k: p.get(k) for k, _ in COSTS} | {"score": _minus(p.get("validation_reward"),
                                                                 start)})
      points = [_point(by_step[step]) for step in sorted(by_step)]
      out.append({"label": group, "kind": "online", "points": points})
      continue
    runs: dict[str, list[dict[str, Any]]] = {}
    order: dict[str, tuple] = {}
    for res in members:
      val = _validation(res)
      start = val.get(BC_RUN, {}).get("early_stopping_reward")
      for run, row in val.items():
        if _is_online(row):
          continue
        cost = {k: (0.0 if run == BC_RUN else row.get(k)) for k, _ in COSTS}
        runs.setdefault(run, []).append(
            cost | {"score": _minus(row.get("early_stopping_reward"), start)})
        order[run] = (row.get("grow_step", 0), row.get("improve_step", 0))
    points = [_point(runs[run]) | {"run": run} for run in sorted(runs, key=order.get)]
    out.append({"label": group, "kind": "rest", "points": points})
  return out


def _minus(a, b):
  return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def _point(entries) -> dict[str, Any]:
  entries = list(entries)
  point = {}
  for key in [k for k, _ in COSTS] + ["score"]:
    values = [e[key] for e in entries if isinstance(e.get(key), (int, float))]
    point[key] = mean_std(values) if values else None
  return point


def table_rows(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
  """One entry per (group, run) in the paper's table form: BC, the ReST runs, the online run.
  {group, run, n, splits: {split: {'reward': stat, 'delta': stat}}, 'bleu', 'length_ratio'
  (validation), costs: {cost: stat}}; `delta` is the paired change from the same seed's BC."""
  out = []
  for group, members in groups.items():
    per_run: dict[str, list[Mapping[str, Any]]] = {}  # Validation rows of the seeds.
    order: dict[str, tuple] = {}
    for res in members:
      for run, row in _validation(res).items():
        per_run.setdefault(run, []).append(row)
        order[run] = ((1, 0, 0) if _is_online(row) else
                      (0, row.get("grow_step", 0), row.get("improve_step", 0)))
    bc_by_seed = [{r["split"]: r for r in res["rows"] if r["run"] == BC_RUN} for res in members]
    for run in sorted(per_run, key=order.get):
      entry = {"group": group, "run": run, "n": len(per_run[run]), "of": len(members),
               "splits": {}, "costs": {}}
      splits = list(dict.fromkeys(r["split"] for res in members for r in res["rows"]
                                  if r["run"] == run))
      for split in splits:
        values, deltas = [], []
        for res, bc in zip(members, bc_by_seed):
          row = next((r for r in res["rows"] if r["run"] == run and r["split"] == split), None)
          if row is None or row.get("mean_reward") is None:
            continue
          values.append(row["mean_reward"])
          if split in bc and bc[split].get("mean_reward") is not None:
            deltas.append(row["mean_reward"] - bc[split]["mean_reward"])
        entry["splits"][split] = {"reward": mean_std(values) if values else None,
                                  "delta": mean_std(deltas) if deltas and run != BC_RUN else None}
      for key in ("bleu", "length_ratio"):
        values = [row[key] for row in per_run[run] if isinstance(row.get(key), (int, float))]
        entry[key] = mean_std(values) if values else None
      for key, _ in COSTS:
        values = [0.0 if run == BC_RUN else row.get(key) for row in per_run[run]]
        values = [v for v in values if isinstance(v, (int, float))]
        entry["costs"][key] = mean_std(values) if values else None
      out.append(entry)
  return out


def markdown(entries: Sequence[Mapping[str, Any]], title: str) -> str:
  splits = list(dict.fromkeys(s for e in entries for s in e["splits"]))
  header = ["group", "run", "n", *[f"{s} reward (Δ vs BC)" for s in splits],
            "validation BLEU", "validation length ratio", *[t for _, t in COSTS]]
  lines = [f"# {title}: ReST and online RL per sample, reward call and second\n",
           "Reward: the reported reward (EvalConfig.reward) of each run's selected policy, "
           "greedy, mean ± sample standard deviation over the group's seeds; in brackets the "
           "change from the same seed's BC (paired), mean ± std. Costs are counted after BC: "
           "samples drawn and reward calls up to the run's Grow step (ReST) or its last step "
           "(online), and wall seconds of sampling, scoring and training with their validation "
           "evaluations (not the reports' evaluations).\n",
           "| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (len(header) - 3)]
  for e in entries:
    cells = [e["group"], e["run"], f"{e['n']}/{e['of']}"]
    for split in splits:
      s = e["splits"].get(split)
      if s is None or s["reward"] is None:
        cells.append("-")
        continue
      delta = s["delta"]
      sign = "" if delta is None else (  # round() + 0.0: no "-0.00" for a mean of about zero.
          f" ({round(delta[0], 2) + 0.0:+.2f}" +
          ("" if delta[1] is None else f" ± {delta[1]:.2f}") + ")")
      cells.append(format_mean_std(s["reward"]) + sign)
    cells += [format_mean_std(e["bleu"]), format_mean_std(e["length_ratio"], "{:.3f}")]
    cells += [format_mean_std(e["costs"][k], "{:,.0f}", exact_if_equal=True) for k, _ in COSTS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(all_series: Sequence[Mapping[str, Any]], path: str, score_label: str) -> str:
  """Score against samples drawn, reward calls and wall seconds: one panel each; ReST groups
  as markers per run with ±1 std bars, online groups as a curve with a ±1 std band."""
  fig = Figure(figsize=(15, 4.6), layout="constrained")
  axes = fig.subplots(1, len(COSTS), sharey=True)
  for s in all_series:
    for ax, (key, title) in zip(axes, COSTS):
      pts = [p for p in s["points"] if p[key] is not None and p["score"] is not None]
      if not pts:
        continue
      x = np.array([p[key][0] for p in pts])
      y = np.array([p["score"][0] for p in pts])
      err = np.array([p["score"][1] or 0.0 for p in pts])
      n = max(p["score"][2] for p in pts)
      if s["kind"] == "online":
        line, = ax.plot(x, y, label=f"{s['label']} (online, n={n})")
        ax.fill_between(x, y - err, y + err, color=line.get_color(), alpha=0.2)
      else:
        container = ax.errorbar(x, y, yerr=err, marker="o", capsize=3,
                                label=f"{s['label']} (ReST, n={n})")
        for p, xi, yi in zip(pts, x, y):
          ax.annotate(p.get("run", ""), (xi, yi), textcoords="offset points", xytext=(4, 4),
                      fontsize=7, color=container.lines[0].get_color())
      ax.set_xlabel(title)
  axes[0].set_ylabel(score_label)
  for ax in axes:
    ax.grid(alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7, loc="best")
  fig.suptitle("Change in validation score from each seed's BC against cost: mean over "
               "seeds, ±1 std")
  FigureCanvasAgg(fig).print_png(path)
  return path
