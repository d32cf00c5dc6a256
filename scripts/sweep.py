r"""Runs an ablation sweep (experiments/sweeps/*.sweep) locally, or prints its launch commands.

  python scripts/sweep.py run  --sweep=experiments/sweeps/tiny_loss_threshold.sweep --root=/tmp/sw
  python scripts/sweep.py run  --sweep=... --root=... --dry_run     # the plan, nothing runs
  python scripts/sweep.py emit --sweep=... --root=...               # one command per point
  python scripts/sweep.py emit --sweep=... --root=gs://b/sw --tpu_vm=rest-v4-{index} \
      --tpu_zone=us-central2-b

`run` validates every point first (gin parse + config construction), then runs the points one
after another in this process: finished points are skipped, started ones resume in their
workdir, and points whose BC and Grow phases are identical start from one shared copy of a
workdir stopped after `grow1` (see rest_jax/sweeps.py and docs/sweeps.md). Then
`python scripts/aggregate_sweep.py --root=...` compares the points.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shlex
import shutil
import sys
import time
from typing import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rest_jax import sweeps  # noqa: E402  (after the path set-up above)

SEARCH_PATHS_HELP = "Where gin files and their includes are looked up."


def _search_paths() -> list[str]:
  from rest_jax import main
  return [main.EXPERIMENTS_DIR, "."]


def run_point(point: sweeps.Point, workdir: str, search_paths: Sequence[str],
              extra_bindings: Sequence[str] = (), write_operative: bool = True) -> list[dict]:
  """Runs (or resumes) one point in this process, writing its configs as main.py does."""
  import gin
  from rest_jax import main
  gin.clear_config()
  try:
    main.parse_gin(point.gin_files, list(point.bindings) + list(extra_bindings), search_paths)
    os.makedirs(workdir, exist_ok=True)
    sweeps.write_text(os.path.join(workdir, sweeps.CONFIG_NAME), gin.config_str())
    rows = gin.get_configurable("rest_loop.run")(workdir=workdir)
    if write_operative:
      sweeps.write_text(os.path.join(workdir, sweeps.OPERATIVE_NAME),
                         gin.operative_config_str())
    return rows
  finally:
    gin.clear_config()


def copy_prefix(prefix_dir: str, workdir: str) -> None:
  """Fills `workdir` with the shared BC+Grow workdir. Checkpoints move in last, so a copy cut
  short leaves a point that still counts as new and is copied again."""
  staging = os.path.join(os.path.dirname(prefix_dir), ".copying", os.path.basename(workdir))
  shutil.rmtree(staging, ignore_errors=True)
  own = (sweeps.CONFIG_NAME, sweeps.OPERATIVE_NAME, sweeps.PREFIX_DONE_NAME, sweeps.POINT_NAME,
         sweeps.POINT_BINDINGS_NAME)
  shutil.copytree(prefix_dir, staging, ignore=shutil.ignore_patterns(*own))
  os.makedirs(workdir, exist_ok=True)
  for name in sorted(os.listdir(staging), key=lambda n: n == "checkpoints"):
    dest = os.path.join(workdir, name)
    if os.path.isdir(dest):
      shutil.rmtree(dest)
    elif os.path.exists(dest):
      os.remove(dest)
    os.rename(os.path.join(staging, name), dest)
  shutil.rmtree(staging, ignore_errors=True)


def plan_sweep(points: Sequence[sweeps.Point], configs: dict[str, sweeps.PointConfig], root: str,
               share_prefix: bool = True, prefixes_dir: str | None = None
               ) -> list[tuple[sweeps.Point, str, str | None]]:
  """(point, action, prefix dir) per point; action is one of 'skip (complete)', 'resume',
  'from shared prefix', 'from scratch'. Prefix folders are named by the hash of the BC + Grow
  configuration, so sweeps with the same BC and Grow can share one `prefixes_dir`."""
  prefixes_dir = prefixes_dir or os.path.join(root, sweeps.PREFIX_DIR)
  groups = collections.defaultdict(list)
  status = {p.name: sweeps.point_status(sweeps.point_workdir(root, p)) for p in points}
  for p in points:
    if configs[p.name].prefix_key is not None:
      groups[configs[p.name].prefix_key].append(p)
  plan = []
  for p in points:
    key = configs[p.name].prefix_key
    prefix_dir = None if key is None else os.path.join(prefixes_dir, key)
    if status[p.name] == "complete":
      plan.append((p, "skip (complete)", None))
    elif status[p.name] == "started":
      plan.append((p, "resume", None))
    elif share_prefix and key is not None and (
        os.path.exists(os.path.join(prefix_dir, sweeps.PREFIX_DONE_NAME))
        or sum(status[q.name] == "new" for q in groups[key]) >= 2):
      plan.append((p, "from shared prefix", prefix_dir))
    else:
      plan.append((p, "from scratch", None))
  return plan


def _ensure_prefix(prefix_dir: str, point: sweeps.Point, search_paths, log) -> None:
  done = os.path.join(prefix_dir, sweeps.PREFIX_DONE_NAME)
  if os.path.exists(done):
    return
  log(f"  running the shared BC + Grow prefix in {prefix_dir} (with {point.name}'s config)")
  run_point(point, prefix_dir, search_paths,
            [f"rest_loop.run.stop_after_phase = '{sweeps.PREFIX_PHASE}'"], write_operative=False)
  sweeps.write_text(done, json.dumps({"point": point.name, "gin_files": list(point.gin_files),
                                       "bindings": list(point.bindings)}, indent=2) + "\n")


def run_sweep(sweep: sweeps.Sweep, root: str, search_paths: Sequence[str] | None = None,
              share_prefix: bool = True, keep_going: bool = False,
              prefixes_dir: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, str]:
  """Validates all points, then runs them one after another; returns {point: outcome}."""
  if "://" in root:
    raise sweeps.SweepError(f"--root={root!r}: `run` runs the points on this machine and needs "
                            "a local folder; `emit` prints commands for a remote root.")
  search_paths = list(search_paths or _search_paths())
  points = sweeps.expand(sweep)
  configs = sweeps.check_points(points, search_paths)
  sweeps.write_manifest(sweep, points, configs, root)
  for p in points:
    sweeps.write_point_files(p, sweeps.point_workdir(root, p), configs[p.name])
  outcome = {}
  plan = plan_sweep(points, configs, root, share_prefix, prefixes_dir)
  for i, (point, action, prefix_dir) in enumerate(plan, start=1):
    workdir = sweeps.point_workdir(root, point)
    log(f"[sweep {i}/{len(plan)}] {point.name}: {action}")
    if action.startswith("skip"):
      outcome[point.name] = "complete (skipped)"
      continue
    start = time.time()
    try:
      if prefix_dir is not None:
        _ensure_prefix(prefix_dir, point, search_paths, log)
        copy_prefix(prefix_dir, workdir)
      run_point(point, workdir, search_paths)
      outcome[point.name] = "complete"
    except Exception as e:  # keep_going: one failed point must not stop the others.
      if not keep_going:
        raise
      logging.exception("Sweep point %s failed", point.name)
      outcome[point.name] = f"failed: {type(e).__name__}: {e}"
    log(f"[sweep {i}/{len(plan)}] {point.name}: {outcome[point.name]} in "
        f"{time.time() - start:.0f} s")
  return outcome


# ------------------------------------------------------------------------------------ CLI


def _print_plan(sweep, root, search_paths, share_prefix, prefixes_dir) -> None:
  points = sweeps.expand(sweep)
  configs = sweeps.check_points(points, search_paths)
  for point, action, prefix_dir in plan_sweep(points, configs, root, share_prefix,
                                              prefixes_dir):
    shared = f" ({prefix_dir})" if prefix_dir else ""
    print(f"# {point.name}: {action}{shared}")
    print(sweeps.launch_command(point, root))


def _emit(sweep, root, search_paths, python, write, tpu_vm=None, tpu_zone=None,
          tpu_args="") -> None:
  if tpu_vm and not tpu_zone:
    raise sweeps.SweepError("--tpu_vm needs --tpu_zone (scripts/tpu_vm.py requires --zone).")
  points = sweeps.expand(sweep)
  configs = sweeps.check_points(points, search_paths)
  if write and "://" not in root:
    sweeps.write_manifest(sweep, points, configs, root)
    for p in points:
      sweeps.write_point_files(p, sweeps.point_workdir(root, p), configs[p.name])
  print(f"# {len(points)} points of {sweep.path}; each command runs its point from scratch "
        "(only `scripts/sweep.py run` shares the BC + Grow prefix).")
  for i, p in enumerate(points):
    print(sweeps.tpu_command(p, root, tpu_vm, tpu_zone, i, shlex.split(tpu_args), python)
          if tpu_vm else sweeps.launch_command(p, root, python))


def _enable_compilation_cache(directory: str) -> None:
  """Points run in one process compile the same programs; the persistent cache reuses them."""
  if not directory or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  run = sub.add_parser("run", help="Run the points locally, one after another.")
  emit = sub.add_parser("emit", help="Print one launch command per point.")
  for p in (run, emit):
    p.add_argument("--sweep", required=True, help="Sweep file (experiments/sweeps/*.sweep).")
    p.add_argument("--root", required=True, help="Sweep root: one workdir per point under it.")
    p.add_argument("--gin_search_paths", nargs="*", default=None, help=SEARCH_PATHS_HELP)
  run.add_argument("--dry_run", action="store_true",
                   help="Validate and print each point's action and command; run nothing.")
  run.add_argument("--no_share_prefix", action="store_true",
                   help="Run every point from scratch.")
  run.add_argument("--prefixes_dir", default=None,
                   help="Where shared BC + Grow workdirs live (default <root>/_prefixes); "
                        "give several sweeps the same one to share BC + Grow between them.")
  run.add_argument("--keep_going", action="store_true",
                   help="A failed point is reported at the end instead of stopping the sweep.")
  run.add_argument("--compilation_cache", default=None,
                   help="Persistent JAX compilation cache (default <root>/_compilation_cache; "
                        "'' disables; JAX_COMPILATION_CACHE_DIR wins).")
  emit.add_argument("--tpu_vm", default=None,
                    help="Emit `scripts/tpu_vm.py run --name=VM` commands ('{index}' in the "
                         "name becomes the point's index).")
  emit.add_argument("--tpu_zone", default=None, help="--zone of the TPU VM(s), e.g. "
                    "us-central2-b.")
  emit.add_argument("--tpu_args", default="",
                    help="Extra `tpu_vm.py run` flags for every command, e.g. "
                         "'--env=REST_JAX_TSV_DIR=gs://b/data --python=python3'.")
  emit.add_argument("--python", default="python", help="Python executable in the commands.")
  emit.add_argument("--no_write", action="store_true",
                    help="Do not write sweep.json and the points' files under a local --root.")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  search_paths = args.gin_search_paths or _search_paths()
  try:
    sweep = sweeps.load_sweep(args.sweep)
    if args.command == "emit":
      _emit(sweep, args.root, search_paths, args.python, not args.no_write, args.tpu_vm,
            args.tpu_zone, args.tpu_args)
      return 0
    share = not args.no_share_prefix
    if args.dry_run:
      _print_plan(sweep, args.root, search_paths, share, args.prefixes_dir)
      return 0
    from rest_jax import main as rest_main
    rest_main.configure_logging()
    cache = args.compilation_cache
    _enable_compilation_cache(os.path.join(args.root, "_compilation_cache") if cache is None
                              else cache)
    outcome = run_sweep(sweep, args.root, search_paths, share, args.keep_going,
                        args.prefixes_dir)
  except sweeps.SweepError as e:  # Raised before anything runs.
    print(f"error: {e}", file=sys.stderr)
    return 2
  failed = {k: v for k, v in outcome.items() if v.startswith("failed")}
  print(f"{len(outcome) - len(failed)} of {len(outcome)} points complete under {args.root}.")
  for name, why in failed.items():
    print(f"  {name}: {why}")
  print(f"Compare them: python scripts/aggregate_sweep.py --root={args.root}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
