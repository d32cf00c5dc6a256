r"""Compares the points of a sweep: one table row per point and the paper's figures per variant.

  python scripts/aggregate_sweep.py --root=/tmp/tiny_sweep [--out=DIR] [--sweep=FILE]

Reads each point's results.jsonl (the points come from <root>/sweep.json, written by
`scripts/sweep.py run|emit`, or from --sweep) and writes to --out (default: the root)

  sweep_results.md / .csv  one row per point: axis values, status, BC (G0I0) validation reward,
                           final validation reward / BLEU / chrF and the delta vs BC, examples
                           kept by the final round's filter, test BLEU of BC and of the final
                           policy and their delta, best Improve step (by validation reward)
  reward_per_step.png      validation reward per step (G0I0, G1I0, G1I1, ...), one line per point
  final_reward_bars.png    final validation reward per value of --bar_axis (default: the 'loss'
                           axis if there is one, else the first), BC as a reference line
  best_of_n.png            Best-of-N curves of each final policy and BC, when rows carry them
  sweep_cost.md            when rows carry costs (ReST after Grow, online RL): per group and run,
                           the reported reward on every split with the paired change from BC,
                           and samples drawn, reward calls and wall seconds after BC
                           (rest_jax.cost_comparison), over seeds with a seed axis
  reward_vs_cost.png       validation score against those three costs, ReST and online groups

With a seed axis (an axis named 'seed', or --seed_axis), the points that differ only in their
seed form a group, and the results over seeds are written as well:

  sweep_seeds.md / .csv    per group, run (G0I0, G1I0, ..., online) and split: how many seeds
                           finished, and the mean and sample standard deviation over them of
                           reward, BLEU, chrF, length ratio and each sampled metric (pass@k,
                           maj@k, ...); runs a seed has not reached are counted for the others
  reward_per_step_seeds.png  validation reward and BLEU per step, mean with a ±1 std band per
                           group

A point whose run has not finished is listed as incomplete with what it has recorded so far;
the plots show finished points only.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rest_jax import cost_comparison, report, sweeps  # noqa: E402  (after the path set-up above)

TABLE_FIELDS = ("point", "status", "bc_reward", "final_run", "final_reward", "delta_reward",
                "final_bleu", "final_chrf", "final_kept", "bc_test_bleu", "final_test_bleu",
                "delta_test_bleu", "best_run", "best_reward")
STATUS_LABELS = {"complete": "complete", "started": "incomplete", "new": "not started"}


def _step(row: Mapping[str, Any]) -> tuple[int, int]:
  return (row.get("grow_step", 0), row.get("improve_step", 0))


def collect(root: str, points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """[{name, axis_values, status, rows, workdir}] for each point, in sweep order."""
  out = []
  for point in points:
    workdir = os.path.join(root, point["name"])
    status = STATUS_LABELS[sweeps.point_status(workdir)]
    rows = sweeps.read_rows(workdir)
    if status == "not started" and rows:
      status = "incomplete"
    out.append({"name": point["name"], "axis_values": dict(point["axis_values"]),
                "status": status, "rows": rows, "workdir": workdir})
  return out


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
  """The table row of one point (None where it has no such value yet)."""
  val = sorted((r for r in result["rows"] if r["split"] == "validation"
                and r.get("mean_reward") is not None), key=_step)
  test = {r["run"]: r for r in result["rows"] if r["split"] == "test"}
  bc = next((r for r in val if r["run"] == "G0I0"), None)
  final = val[-1] if val else None
  improve = [r for r in val if r.get("grow_step", 0) >= 1]
  best = max(improve, key=lambda r: r["mean_reward"]) if improve else None
  get = lambda row, key: None if row is None else row.get(key)
  minus = lambda a, b: None if a is None or b is None else a - b
  summary = {"point": result["name"], **result["axis_values"], "status": result["status"],
             "bc_reward": get(bc, "mean_reward"), "final_run": get(final, "run"),
             "final_reward": get(final, "mean_reward"), "final_bleu": get(final, "bleu"),
             "final_chrf": get(final, "chrf"), "final_kept": get(final, "num_kept"),
             "bc_test_bleu": get(test.get("G0I0"), "bleu"),
             "final_test_bleu": get(test.get(get(final, "run")), "bleu"),
             "best_run": get(best, "run"), "best_reward": get(best, "mean_reward")}
  summary["delta_reward"] = minus(summary["final_reward"], summary["bc_reward"])
  summary["delta_test_bleu"] = minus(summary["final_test_bleu"], summary["bc_test_bleu"])
  return summary


# ------------------------------------------------------------------------ over seeds

SEED_METRICS = ("mean_reward", "bleu", "chrf", "length_ratio")
SEED_METRIC_TITLES = {"mean_reward": "reward", "bleu": "BLEU", "chrf": "chrF",
                      "length_ratio": "length ratio"}
# Dict-valued row fields flattened into one metric per key: pass_at_k {"4": 61.2} -> pass@4.
SEED_DICT_METRICS = (("pass_at_k", "pass@{}"), ("maj_at_k", "maj@{}"),
                     ("best_of_n_reranked", "best-of-{} reranked"), ("best_of_n", "best-of-{}"))


def _flat_metrics(row: Mapping[str, Any]) -> dict[str, float]:
  out = {m: row[m] for m in SEED_METRICS if isinstance(row.get(m), (int, float))}
  for key, title in SEED_DICT_METRICS:
    for k, v in sorted((row.get(key) or {}).items(), key=lambda kv: int(kv[0])):
      if isinstance(v, (int, float)):
        out[title.format(k)] = v
  return out


def _run_order(row: Mapping[str, Any]) -> tuple:
  # Grow/Improve points in order; rows without them (online phases) after, by name.
  if "grow_step" in row:
    return (0, row.get("grow_step", 0), row.get("improve_step", 0), "")
  return (1, 0, 0, str(row.get("run")))


def seed_groups(results: Sequence[Mapping[str, Any]], axes: Sequence[str],
                seed_axis: str) -> dict[str, list[Mapping[str, Any]]]:
  """{group label: its points' results}, grouping the points that differ only in `seed_axis`."""
  others = [a for a in axes if a != seed_axis]
  groups: dict[str, list[Mapping[str, Any]]] = {}
  for res in results:
    label = ",".join(f"{a}={res['axis_values'][a]}" for a in others) or "all"
    groups.setdefault(label, []).append(res)
  return groups


def seed_statistics(results: Sequence[Mapping[str, Any]], axes: Sequence[str],
                    seed_axis: str) -> list[dict[str, Any]]:
  """One entry per (group, run, split): seeds, n and {metric: (mean, std, n)} over the seeds
  that recorded the row. std is the sample standard deviation (ddof=1), None for one seed."""
  out = []
  for group, members in seed_groups(results, axes, seed_axis).items():
    keyed: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = {}
    order: dict[tuple[str, str], tuple] = {}
    for res in members:
      for row in res["rows"]:
        key = (row["run"], row["split"])
        keyed.setdefault(key, []).append((str(res["axis_values"][seed_axis]), row))
        order.setdefault(key, _run_order(row))
    splits = list(dict.fromkeys(split for _, split in keyed))
    for run, split in sorted(keyed, key=lambda k: (splits.index(k[1]), order[k])):
      entries = keyed[(run, split)]
      metrics: dict[str, list[float]] = {}
      for _, row in entries:
        for name, value in _flat_metrics(row).items():
          metrics.setdefault(name, []).append(float(value))
      stats = {name: cost_comparison.mean_std(values) for name, values in metrics.items()}
      out.append({"group": group, "run": run, "split": split,
                  "seeds": sorted(s for s, _ in entries), "n": len(entries),
                  "of": len(members), "metrics": stats})
  return out


def seed_markdown(stats: Sequence[Mapping[str, Any]], seed_axis: str, title: str) -> str:
  """One table per split: a row per (group, run) with mean ± std over seeds of each metric."""
  lines = [f"# {title}: mean ± standard deviation over {seed_axis}s\n",
           f"Each cell is the mean ± sample standard deviation over the points of a group "
           f"(the points that differ only in '{seed_axis}'); n is the number of seeds that "
           f"recorded the row, of the group's points. A single seed shows its value alone.\n"]
  for split in dict.fromkeys(s["split"] for s in stats):
    chosen = [s for s in stats if s["split"] == split]
    names = list(dict.fromkeys(name for s in chosen for name in s["metrics"]))
    header = ["group", "run", "n", *[SEED_METRIC_TITLES.get(n, n) for n in names]]
    lines += [f"## {split}\n", "| " + " | ".join(header) + " |",
              "|---|---|---:|" + "---:|" * len(names)]
    for s in chosen:
      cells = [s["group"], s["run"], f"{s['n']}/{s['of']}",
               *[cost_comparison.format_mean_std(s["metrics"].get(n)) for n in names]]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def write_seed_csv(stats: Sequence[Mapping[str, Any]], path: str) -> str:
  names = list(dict.fromkeys(name for s in stats for name in s["metrics"]))
  fields = ["group", "run", "split", "n", "of", "seeds"]
  fields += [f"{n} {part}" for n in names for part in ("mean", "std")]
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for s in stats:
      row = {"group": s["group"], "run": s["run"], "split": s["split"], "n": s["n"],
             "of": s["of"], "seeds": " ".join(s["seeds"])}
      for n in names:
        mean, std, _ = s["metrics"].get(n, (None, None, 0))
        row[f"{n} mean"] = "" if mean is None else mean
        row[f"{n} std"] = "" if std is None else std
      writer.writerow(row)
  return path


def plot_seed_reward_per_step(stats: Sequence[Mapping[str, Any]], path: str) -> str:
  """Validation reward and BLEU per step: the mean over seeds and a ±1 std band per group."""
  val = [s for s in stats if s["split"] == "validation"]
  runs = list(dict.fromkeys(s["run"] for s in val))
  fig = Figure(figsize=(max(6.0, 0.8 * len(runs) + 3), 6.5), layout="constrained")
  axes = fig.subplots(2, 1, sharex=True)
  for group in dict.fromkeys(s["group"] for s in val):
    chosen = [s for s in val if s["group"] == group]
    for ax, key in zip(axes, ("mean_reward", "bleu")):
      points = [(runs.index(s["run"]), s["metrics"][key]) for s in chosen if key in s["metrics"]]
      if not points:
        continue
      x = np.array([p[0] for p in points])
      mean = np.array([p[1][0] for p in points])
      std = np.array([p[1][1] or 0.0 for p in points])
      line, = ax.plot(x, mean, marker="o", label=f"{group} (n={max(p[1][2] for p in points)})")
      ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  axes[0].set_ylabel("validation reward (0-100)")
  axes[1].set_ylabel("validation BLEU")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].set_xticks(range(len(runs)), runs)
  if axes[0].get_legend_handles_labels()[0]:
    axes[0].legend(fontsize=7, loc="best")
  axes[0].set_title("Reward per step: mean over seeds, ±1 std band")
  return _save(fig, path)


def _cell(value: Any, signed: bool = False) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:+.2f}" if signed else f"{value:.2f}"
  return str(value)


def markdown(summaries: Sequence[Mapping[str, Any]], axes: Sequence[str], title: str) -> str:
  header = ["point", *axes, "status", "BC reward", "final", "reward", "Δ reward", "BLEU", "chrF",
            "kept", "test BLEU (BC)", "test BLEU", "Δ test BLEU", "best step"]
  lines = [f"# {title}\n", "Validation rewards on the 0-100 scale; 'final' is the last "
           "evaluated policy, Δ is final minus BC (G0I0).\n",
           "| " + " | ".join(header) + " |", "|" + "---|" * (len(axes) + 2) + "---:|" * 11]
  for s in summaries:
    best = "-" if s["best_run"] is None else f"{s['best_run']} ({s['best_reward']:.2f})"
    cells = [s["point"], *[str(s[a]) for a in axes], s["status"], _cell(s["bc_reward"]),
             _cell(s["final_run"]), _cell(s["final_reward"]), _cell(s["delta_reward"], True),
             _cell(s["final_bleu"]), _cell(s["final_chrf"]), _cell(s["final_kept"]),
             _cell(s["bc_test_bleu"]),
             _cell(s["final_test_bleu"]), _cell(s["delta_test_bleu"], True), best]
    lines.append("| " + " | ".join(cells) + " |")
  unfinished = [s for s in summaries if s["status"] != "complete"]
  if unfinished:
    lines += ["", f"{len(unfinished)} point(s) not finished (values so far; not in the plots):"]
    lines += [f"- {s['point']}: {s['status']}, last recorded {s['final_run'] or 'nothing'}"
              for s in unfinished]
  return "\n".join(lines) + "\n"


def write_csv(summaries: Sequence[Mapping[str, Any]], axes: Sequence[str], path: str) -> str:
  fields = ["point", *axes, *TABLE_FIELDS[1:]]
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for s in summaries:
      writer.writerow({k: "" if s.get(k) is None else s[k] for k in fields})
  return path


# ------------------------------------------------------------------------------------ plots


def _save(fig: Figure, path: str) -> str:
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=100)
  return path


def plot_reward_per_step(results: Sequence[Mapping[str, Any]], path: str) -> str:
  """Validation reward and BLEU per step, one line per finished point (the paper's Fig. 3)."""
  steps = sorted({_step(r) for res in results for r in res["rows"]
                  if r["split"] == "validation"})
  x_of = {s: i for i, s in enumerate(steps)}
  fig = Figure(figsize=(max(6.0, 0.8 * len(steps) + 3), 6.5), layout="constrained")
  axes = fig.subplots(2, 1, sharex=True)
  for res in results:
    val = sorted((r for r in res["rows"] if r["split"] == "validation"), key=_step)
    for ax, key in zip(axes, ("mean_reward", "bleu")):
      ax.plot([x_of[_step(r)] for r in val], [r.get(key, np.nan) for r in val], marker="o",
              label=res["name"])
  axes[0].set_ylabel("validation reward (0-100)")
  axes[1].set_ylabel("validation BLEU")
  for ax in axes:
    ax.grid(alpha=0.3)
    for i in range(1, len(steps)):
      if steps[i][0] != steps[i - 1][0]:
        ax.axvline(i - 0.5, color="gray", linestyle=":")
  axes[1].set_xticks(range(len(steps)), [report.run_name(g, i) for g, i in steps])
  axes[0].legend(fontsize=7, loc="best")
  axes[0].set_title("Reward per Grow/Improve step")
  return _save(fig, path)


def plot_final_reward_bars(summaries: Sequence[Mapping[str, Any]], bar_axis: str,
                           other_axes: Sequence[str], path: str) -> str:
  """Final validation reward per value of `bar_axis`, one bar series per combination of the
  other axes, with BC (G0I0) as a reference line (one per bar where BC differs)."""
  categories = list(dict.fromkeys(s[bar_axis] for s in summaries))
  series = list(dict.fromkeys(",".join(f"{a}={s[a]}" for a in other_axes) for s in summaries))
  width = 0.8 / len(series)
  fig = Figure(figsize=(max(6.0, 1.2 * len(categories) * max(1, len(series) / 2)), 4.5),
               layout="constrained")
  ax = fig.subplots()
  bcs = [s["bc_reward"] for s in summaries if s["bc_reward"] is not None] or [0.0]
  shared_bc = max(bcs) - min(bcs) < 1e-9
  for j, name in enumerate(series):
    chosen = {s[bar_axis]: s for s in summaries
              if ",".join(f"{a}={s[a]}" for a in other_axes) == name}
    xs = [i + (j - (len(series) - 1) / 2) * width for i, c in enumerate(categories)
          if c in chosen]
    values = [chosen[c]["final_reward"] for c in categories if c in chosen]
    bars = ax.bar(xs, values, width, label=name or None)
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    if not shared_bc:
      for x, c in zip(xs, [c for c in categories if c in chosen]):
        if chosen[c]["bc_reward"] is not None:
          ax.hlines(chosen[c]["bc_reward"], x - width / 2, x + width / 2, color="black",
                    linestyle="--")
  if shared_bc:
    ax.axhline(bcs[0], color="black", linestyle="--", label=f"BC (G0I0) {bcs[0]:.1f}")
  low = min(min(bcs), min(s["final_reward"] for s in summaries))
  high = max(max(bcs), max(s["final_reward"] for s in summaries))
  ax.set_ylim(max(0.0, low - 0.1 * (high - low + 1)), high + 0.15 * (high - low + 1))
  ax.set_xticks(range(len(categories)), categories)
  ax.set_xlabel(bar_axis)
  ax.set_ylabel("final validation reward (0-100)")
  ax.set_title(f"Final validation reward by {bar_axis}"
               + ("" if shared_bc else " (dashed: each point's BC)"))
  ax.grid(axis="y", alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  return _save(fig, path)


def best_of_n_curves(results: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
  """Best-of-N of each point's final policy, plus BC's (once if every point shares it)."""
  curves, bc_curves = {}, {}
  for res in results:
    val = sorted((r for r in res["rows"] if r["split"] == "validation"), key=_step)
    points = lambda row: sorted((int(n), v) for n, v in row["best_of_n"].items())
    if val and val[-1].get("best_of_n"):
      curves[res["name"]] = points(val[-1])
    bc = next((r for r in val if r["run"] == "G0I0" and r.get("best_of_n")), None)
    if bc is not None:
      bc_curves[res["name"]] = points(bc)
  if not curves:
    return {}
  distinct = {tuple(c) for c in bc_curves.values()}
  if len(distinct) == 1:
    curves["BC (G0I0)"] = list(distinct.pop())
  else:
    curves.update({f"{name} BC": c for name, c in bc_curves.items()})
  return curves


def aggregate(root: str, out: str | None = None, sweep_path: str | None = None,
              bar_axis: str | None = None, seed_axis: str | None = None) -> dict[str, str]:
  """Writes the table and plots for the sweep under `root`; returns {what: path}."""
  if sweep_path:
    sweep = sweeps.load_sweep(sweep_path)
    points = [p.to_json() for p in sweeps.expand(sweep)]
    axes, title = [a.name for a in sweep.axes], sweep.description
  else:
    manifest = sweeps.read_manifest(root)
    points, axes, title = manifest["points"], manifest["axes"], manifest.get("description")
  if seed_axis is not None and seed_axis not in axes:
    raise sweeps.SweepError(f"--seed_axis={seed_axis!r} is not an axis of this sweep: {axes}.")
  seed_axis = seed_axis or ("seed" if "seed" in axes else None)
  bar_axis = bar_axis or ("loss" if "loss" in axes else axes[0])
  if bar_axis not in axes:
    raise sweeps.SweepError(f"--bar_axis={bar_axis!r} is not an axis of this sweep: {axes}.")
  out = out or root
  os.makedirs(out, exist_ok=True)
  results = collect(root, points)
  summaries = [summarize(r) for r in results]
  written = {"markdown": os.path.join(out, "sweep_results.md"),
             "csv": write_csv(summaries, axes, os.path.join(out, "sweep_results.csv"))}
  with open(written["markdown"], "w", encoding="utf-8") as f:
    f.write(markdown(summaries, axes, title or f"Sweep {root}"))
  if seed_axis is not None:
    stats = seed_statistics(results, axes, seed_axis)
    written["seeds_markdown"] = os.path.join(out, "sweep_seeds.md")
    with open(written["seeds_markdown"], "w", encoding="utf-8") as f:
      f.write(seed_markdown(stats, seed_axis, title or f"Sweep {root}"))
    written["seeds_csv"] = write_seed_csv(stats, os.path.join(out, "sweep_seeds.csv"))
    if any(s["split"] == "validation" for s in stats):
      written["reward_per_step_seeds"] = plot_seed_reward_per_step(
          stats, os.path.join(out, "reward_per_step_seeds.png"))
  if cost_comparison.has_costs(results):
    groups = (seed_groups(results, axes, seed_axis) if seed_axis is not None
              else {r["name"]: [r] for r in results})
    written["cost_markdown"] = os.path.join(out, "sweep_cost.md")
    with open(written["cost_markdown"], "w", encoding="utf-8") as f:
      f.write(cost_comparison.markdown(cost_comparison.table_rows(groups),
                                       title or f"Sweep {root}"))
    written["reward_vs_cost"] = cost_comparison.plot(
        cost_comparison.series(groups), os.path.join(out, "reward_vs_cost.png"),
        "change from BC: the run's reward on the validation subset")
  done = [r for r in results if r["status"] == "complete"]
  done_summaries = [s for s in summaries if s["status"] == "complete"]
  if done:
    written["reward_per_step"] = plot_reward_per_step(done, os.path.join(out,
                                                                         "reward_per_step.png"))
    others = [a for a in axes if a != bar_axis]
    written["final_reward_bars"] = plot_final_reward_bars(
        done_summaries, bar_axis, others, os.path.join(out, "final_reward_bars.png"))
    curves = best_of_n_curves(done)
    if curves:
      written["best_of_n"] = report.plot_best_of_n(curves, os.path.join(out, "best_of_n.png"))
  return written


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", required=True, help="Sweep root (one workdir per point).")
  parser.add_argument("--out", default=None, help="Output folder (default: --root).")
  parser.add_argument("--sweep", default=None,
                      help="Sweep file; default: the points in <root>/sweep.json.")
  parser.add_argument("--bar_axis", default=None,
                      help="Axis of the bar plot (default: 'loss' if present, else the first).")
  parser.add_argument("--seed_axis", default=None,
                      help="Axis whose points are repeats (mean and std over them); default: "
                           "'seed' if the sweep has it, else none.")
  args = parser.parse_args(argv)
  try:
    written = aggregate(args.root, args.out, args.sweep, args.bar_axis, args.seed_axis)
  except sweeps.SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for key in ("markdown", "seeds_markdown", "cost_markdown"):
    if key in written:
      with open(written[key], encoding="utf-8") as f:
        print(f.read())
  for what, path in written.items():
    print(f"{what}: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
