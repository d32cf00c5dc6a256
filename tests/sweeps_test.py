"""Sweeps: expansion, validation, emitted commands, prefix sharing, aggregation, end to end."""

import csv
import importlib.util
import json
import math
import os
import shlex
import time

import gin
import pytest

from rest_jax import cost_comparison, main, report, sweeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SWEEP = os.path.join(REPO, "experiments", "sweeps", "tiny_loss_threshold.sweep")
SEARCH_PATHS = [main.EXPERIMENTS_DIR, "."]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep_cli = load_script("sweep")
aggregate_cli = load_script("aggregate_sweep")


def _spec(**changes):
  spec = {"base": "test/tiny_e2e.gin",
          "bindings": {"improve/TrainPhaseConfig.max_steps": 3},
          "axes": [{"name": "loss", "values": {
                       "bc": {"ImproveConfig.losses": ("bc",)},
                       "gold_s": {"include": ["losses/gold_s.gin"],
                                  "ImproveConfig.lagged_sync_every": 2}}},
                   {"name": "tau", "binding": "ImproveConfig.filter_schedule",
                    "values": {"0.1": ("threshold:tau=0.0", "threshold:tau=0.1"),
                               "0.3": ("threshold:tau=0.0", "threshold:tau=0.3")}},
                   {"name": "seed", "binding": "SEED", "values": [0, 1]}]}
  spec.update(changes)
  return spec


# ------------------------------------------------------------------------------ expansion


def test_product_expansion_names_files_and_bindings():
  points = sweeps.expand(sweeps.parse_sweep(_spec()))
  assert [p.name for p in points] == [
      f"loss={l},tau={t},seed={s}" for l in ("bc", "gold_s") for t in ("0.1", "0.3")
      for s in ("0", "1")]
  gold = points[-1]
  assert dict(gold.axis_values) == {"loss": "gold_s", "tau": "0.3", "seed": "1"}
  assert gold.gin_files == ("test/tiny_e2e.gin", "losses/gold_s.gin")
  assert gold.bindings == ("improve/TrainPhaseConfig.max_steps = 3",
                           "ImproveConfig.lagged_sync_every = 2",
                           "ImproveConfig.filter_schedule = "
                           "('threshold:tau=0.0', 'threshold:tau=0.3')",
                           "SEED = 1")
  assert points[0].gin_files == ("test/tiny_e2e.gin",)
  assert "ImproveConfig.losses = ('bc',)" in points[0].bindings


def test_zip_groups_advance_together():
  spec = _spec(zip=[["tau", "seed"]])
  points = sweeps.expand(sweeps.parse_sweep(spec))
  assert [p.name for p in points] == ["loss=bc,tau=0.1,seed=0", "loss=bc,tau=0.3,seed=1",
                                      "loss=gold_s,tau=0.1,seed=0", "loss=gold_s,tau=0.3,seed=1"]


def test_values_are_gin_text_or_python_literals():
  axis = {"name": "lr", "binding": "improve/OptimizerConfig.learning_rate",
          "values": [1e-4, "3e-4", "%LR"]}
  points = sweeps.expand(sweeps.parse_sweep(_spec(axes=[axis])))
  assert [p.name for p in points] == ["lr=0.0001", "lr=3e-4", "lr=LR"]
  assert [p.bindings[-1] for p in points] == [
      "improve/OptimizerConfig.learning_rate = 0.0001",
      "improve/OptimizerConfig.learning_rate = 3e-4",
      "improve/OptimizerConfig.learning_rate = %LR"]


@pytest.mark.parametrize("changes, message", [
    ({"grid": []}, r"unknown key\(s\) \['grid'\]"),
    ({"base": None}, "'base' must name a gin file"),
    ({"axes": []}, "non-empty list of axes"),
    ({"axes": [{"name": "tau", "binding": "X.y", "values": []}]}, "axis 'tau' has no values"),
    ({"axes": [{"name": "tau", "binding": "X.y", "valus": [1]}]}, r"unknown key\(s\) \['valus'\]"),
    ({"axes": [{"name": "tau", "binding": "X.y", "values": [0.8, "0.8"]}]},
     "duplicate point names.*'0.8'"),
    ({"axes": [{"name": "a", "binding": "X.y", "values": [1]},
               {"name": "a", "binding": "X.z", "values": [2]}]}, "duplicate axis names"),
    ({"axes": [{"name": "loss", "values": [("bc",)]}]}, "no 'binding'"),
    ({"axes": [{"name": "bad name", "binding": "X.y", "values": [1]}]}, "identifier"),
    ({"axes": [{"name": "t", "binding": "X.y", "values": {"a/b": 1}}]}, "label 'a/b'"),
    ({"axes": [{"name": "t", "binding": "X.y", "values": [{1, 2}]}]}, "type set"),
    ({"bindings": {"SEED": 1}, "axes": [{"name": "s", "binding": "SEED", "values": [2]}]},
     "'SEED' is set both"),
    ({"axes": [{"name": "s", "binding": "SEED", "values": [0, 1, 2]},
               {"name": "t", "binding": "X.y", "values": [1, 2]}], "zip": [["s", "t"]]},
     "same number of values"),
    ({"zip": [["loss", "nope"]]}, "unknown axis 'nope'"),
])
def test_invalid_sweeps_name_the_problem(changes, message):
  with pytest.raises(sweeps.SweepError, match=message):
    sweeps.expand(sweeps.parse_sweep(_spec(**changes)))


def test_sweep_files_are_literals_only(tmp_path):
  path = tmp_path / "bad.sweep"
  path.write_text("# comment\n{'base': open('x')}\n")
  with pytest.raises(sweeps.SweepError, match="Python literal"):
    sweeps.load_sweep(str(path))
  with pytest.raises(sweeps.SweepError, match="does not exist"):
    sweeps.load_sweep(str(tmp_path / "missing.sweep"))


def test_shipped_sweep_files_expand_and_validate():
  files = sorted(f for f in os.listdir(os.path.dirname(TINY_SWEEP)) if f.endswith(".sweep"))
  assert {"tiny_loss_threshold.sweep", "ding_loss_comparison.sweep",
          "ding_threshold_ablation.sweep"} <= set(files)
  for name in files:
    path = os.path.join(os.path.dirname(TINY_SWEEP), name)
    text = open(path).read()
    assert text.startswith("#") and "python scripts/sweep.py run" in text and "Expected" in text
    points = sweeps.expand(sweeps.load_sweep(path))
    configs = sweeps.check_points(points, SEARCH_PATHS)
    # A shipped sweep varies Improve settings only (one shared BC + Grow prefix), or repeats an
    # experiment over seeds (one prefix per seed); online points have no Grow prefix.
    seeds = [a for a in sweeps.load_sweep(path).axes if a.name == "seed"]
    expected = len(seeds[0].labels) if seeds else 1
    keys = {c.prefix_key for c in configs.values()}
    assert len(keys - {None}) == expected, name
    assert (None in keys) == ("online" in name), name
  losses = sweeps.expand(sweeps.load_sweep(os.path.join(os.path.dirname(TINY_SWEEP),
                                                        "ding_loss_comparison.sweep")))
  assert [dict(p.axis_values)["loss"] for p in losses] == [
      "bc", "gold_s", "bvmpo", "oac", "reward_weighted_nll"]


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("binding, message", [
    ("ImproveConfig.losses = ('bc',", "loss=x"),
    ("NoSuchConfig.value = 1", "NoSuchConfig"),
    ("ImproveConfig.losses = ('ppo',)", "valid losses"),
    ("ImproveConfig.original_data = keep", "write \"'text'\""),
    ("rest_loop.run.stop_after_phase = 'grow3'", "not a phase of this run"),
])
def test_point_validation_names_point_and_problem(binding, message):
  point = sweeps.Point("loss=x", (("loss", "x"),), ("test/tiny_e2e.gin",), (binding,))
  with pytest.raises(sweeps.SweepError, match=message) as info:
    sweeps.check_point(point, SEARCH_PATHS)
  assert "sweep point 'loss=x'" in str(info.value)
  assert gin.config_str() == ""  # The parsed config is cleared after validation.


def test_online_point_stops_after_its_online_phase():
  point = sweeps.Point("online", (), ("test/tiny_online.gin",),
                       ("rest_loop.run.stop_after_phase = 'online'",))
  assert sweeps.check_point(point, SEARCH_PATHS).prefix_key is None  # No Grow to share.
  point = sweeps.Point("online", (), ("test/tiny_online.gin",),
                       ("rest_loop.run.stop_after_phase = 'grow1'",))
  with pytest.raises(sweeps.SweepError, match=r"phases: \['bc', 'online'\]"):
    sweeps.check_point(point, SEARCH_PATHS)


def _prefix_key(*bindings):
  point = sweeps.Point("p", (), ("test/tiny_e2e.gin",), bindings)
  return sweeps.check_point(point, SEARCH_PATHS).prefix_key


def test_prefix_is_shared_exactly_when_bc_and_grow_match():
  base = _prefix_key()
  assert base is not None
  for improve_only in ("ImproveConfig.losses = ('oac',)",
                       "ImproveConfig.filter_schedule = ('threshold:tau=0.5',)",
                       "improve/OptimizerConfig.learning_rate = 0.1",
                       "ImproveConfig.loss_overrides = {'bvmpo': {'anneal_steps': 10}}",
                       "rest_loop.run.num_grow_steps = 2", "NUM_GROW_STEPS = 3"):
    assert _prefix_key(improve_only) == base, improve_only
  for prefix_changing in ("bc/TrainPhaseConfig.max_steps = 13", "SEED = 1",
                          "GrowConfig.temperature = 0.7", "bc/OptimizerConfig.learning_rate = 0.1",
                          "EvalConfig.batch_size = 8", "MODEL = 'tiny'",
                          "rest_loop.run.model_overrides = {'d_model': 32}",
                          "DataConfig.max_train_examples = 128", "REWARD = 'bleu'"):
    assert _prefix_key(prefix_changing) != base, prefix_changing
  assert _prefix_key("rest_loop.run.num_grow_steps = 0") is None
  assert _prefix_key("rest_loop.run.stop_after_phase = 'bc'") is None


# ------------------------------------------------------------------------------ commands


def _tiny_points():
  return sweeps.expand(sweeps.load_sweep(TINY_SWEEP))


def test_emitted_command_reproduces_the_point_config():
  point = _tiny_points()[-1]
  command = sweeps.launch_command(point, "/tmp/root dir")
  argv = main.rewrite_gin_args(shlex.split(command))
  assert argv[:3] == ["python", "-m", "rest_jax.main"]
  assert "--workdir=/tmp/root dir/" + point.name in argv
  files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")]
  bindings = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_bindings=")]
  assert files == list(point.gin_files)
  gin.clear_config()
  try:
    main.parse_gin(files, bindings, SEARCH_PATHS, finalize=False)
    from_command = gin.config_str()
  finally:
    gin.clear_config()
  assert from_command == sweeps.check_point(point, SEARCH_PATHS).config_str
  assert "tau=0.3" in from_command and "reward_weighted_nll" in from_command


def test_tpu_command_is_accepted_by_tpu_vm_script():
  tpu_vm = load_script("tpu_vm")
  point = _tiny_points()[0]
  command = sweeps.tpu_command(point, "gs://bucket/sweep", "rest-v4-{index}", "us-central2-b",
                               index=3, extra_args=["--accelerator_type=v4-8"])
  argv = shlex.split(command)
  assert argv[:4] == ["python", "scripts/tpu_vm.py", "run", "--name=rest-v4-3"]
  args = tpu_vm.build_parser().parse_args(argv[2:])
  assert args.gin_files == ["test/tiny_e2e.gin"]
  assert args.gin_bindings == [b.replace(" = ", "=", 1) for b in point.bindings]
  assert args.workdir == f"gs://bucket/sweep/{point.name}" and args.zone == "us-central2-b"
  assert args.run_name == "loss_bc_tau_0.1"
  commands, _ = tpu_vm.plan(args)  # Validates the flags as `tpu_vm.py run` would.
  assert any("loss=bc,tau=0.1" in " ".join(c) for c in commands)


def test_cli_emit_writes_points_and_dry_run_writes_nothing(tmp_path, capsys):
  root = tmp_path / "sweep"
  assert sweep_cli.main(["run", f"--sweep={TINY_SWEEP}", f"--root={root}", "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert out.count("python -m rest_jax.main") == 4 and out.count("from shared prefix") == 4
  assert not root.exists()
  assert sweep_cli.main(["emit", f"--sweep={TINY_SWEEP}", f"--root={root}"]) == 0
  assert capsys.readouterr().out.count("--workdir=") == 4
  assert sweep_cli.main(["emit", f"--sweep={TINY_SWEEP}", f"--root={root}", "--tpu_vm=vm"]) == 2
  assert "--tpu_vm needs --tpu_zone" in capsys.readouterr().err
  assert sweep_cli.main(["emit", f"--sweep={TINY_SWEEP}", f"--root={root}", "--tpu_vm=vm",
                         "--tpu_zone=z", "--tpu_args=--env=A=1"]) == 0
  tpu_lines = [l for l in capsys.readouterr().out.splitlines() if not l.startswith("#")]
  assert len(tpu_lines) == 4 and all("--zone=z --run_name=" in l and "--env=A=1" in l
                                     for l in tpu_lines)
  with pytest.raises(sweeps.SweepError, match="needs a local folder"):
    sweep_cli.run_sweep(sweeps.load_sweep(TINY_SWEEP), "gs://bucket/sweep")
  manifest = json.loads((root / sweeps.MANIFEST_NAME).read_text())
  assert manifest["axes"] == ["loss", "tau"] and len(manifest["points"]) == 4
  for p in _tiny_points():
    saved = json.loads((root / p.name / sweeps.POINT_NAME).read_text())
    assert saved["bindings"] == list(p.bindings)
    assert "ImproveConfig.filter_schedule" in (root / p.name / "config.gin").read_text()
    written = (root / p.name / sweeps.POINT_BINDINGS_NAME).read_text().splitlines()
    assert written[1:] == list(p.bindings)


def test_cli_reports_bad_sweep_and_refuses_changed_points(tmp_path, capsys):
  bad = tmp_path / "bad.sweep"
  bad.write_text("{'base': 'test/tiny_e2e.gin', 'axes': [{'name': 'l', 'binding': "
                 "'ImproveConfig.losses', 'values': {'x': ('nope',)}}]}")
  assert sweep_cli.main(["emit", f"--sweep={bad}", f"--root={tmp_path / 'r'}"]) == 2
  assert "sweep point 'l=x'" in capsys.readouterr().err
  assert not (tmp_path / "r").exists()  # Nothing is written for an invalid sweep.
  point, other = _tiny_points()[:2]
  config = sweeps.check_point(point, SEARCH_PATHS)
  sweeps.write_point_files(point, str(tmp_path / "w"), config)
  with pytest.raises(sweeps.SweepError, match="use a new --root"):
    sweeps.write_point_files(sweeps.Point(point.name, point.axis_values, point.gin_files,
                                          other.bindings), str(tmp_path / "w"), config)


def test_plan_skips_finished_resumes_started_and_shares_prefix(tmp_path):
  points = _tiny_points()
  configs = sweeps.check_points(points, SEARCH_PATHS)
  root = str(tmp_path)
  done, started = (tmp_path / points[0].name), (tmp_path / points[1].name)
  (started / "checkpoints" / "1000000").mkdir(parents=True)
  done.mkdir()
  (done / sweeps.OPERATIVE_NAME).write_text("")
  report.ResultsLog(str(done)).record({"run": "G0I0", "split": "validation"})
  actions = [a for _, a, _ in sweep_cli.plan_sweep(points, configs, root)]
  assert actions == ["skip (complete)", "resume", "from shared prefix", "from shared prefix"]
  assert [a for _, a, _ in sweep_cli.plan_sweep(points, configs, root, share_prefix=False)][2:] \
      == ["from scratch", "from scratch"]
  (started / "checkpoints" / "1000000").rmdir()
  (tmp_path / points[2].name / "checkpoints" / "7").mkdir(parents=True)
  # One new point left in its group and no finished prefix: a copy would save nothing.
  (tmp_path / points[3].name / "checkpoints" / "7").mkdir(parents=True)
  actions = [a for _, a, _ in sweep_cli.plan_sweep(points, configs, root)]
  assert actions == ["skip (complete)", "from scratch", "resume", "resume"]


def test_copy_prefix_keeps_the_point_files_and_replaces_a_partial_copy(tmp_path):
  prefix, workdir = tmp_path / "_prefixes" / "abc", tmp_path / "point"
  (prefix / "checkpoints" / "1000000").mkdir(parents=True)
  (prefix / "grown" / "grow_1").mkdir(parents=True)
  (prefix / "grown" / "grow_1" / "shard.npz").write_text("new")
  for name in ("results.jsonl", sweeps.CONFIG_NAME, sweeps.PREFIX_DONE_NAME):
    (prefix / name).write_text("prefix")
  (workdir / "grown").mkdir(parents=True)
  (workdir / "grown" / "stale").write_text("left by a copy cut short")
  (workdir / sweeps.CONFIG_NAME).write_text("point config")
  sweep_cli.copy_prefix(str(prefix), str(workdir))
  assert sorted(os.listdir(workdir)) == ["checkpoints", sweeps.CONFIG_NAME, "grown",
                                         "results.jsonl"]
  assert (workdir / sweeps.CONFIG_NAME).read_text() == "point config"
  assert os.listdir(workdir / "grown") == ["grow_1"]
  assert sorted(os.listdir(tmp_path / "_prefixes")) == [".copying", "abc"]
  assert os.listdir(tmp_path / "_prefixes" / ".copying") == []
  assert sweeps.point_status(str(workdir)) == "started"


def test_run_sweep_runs_prefix_once_then_points_and_keeps_going(tmp_path, monkeypatch):
  """The orchestration, with each run replaced by a fake that writes what a run writes."""
  points = _tiny_points()
  failing = points[2].name
  calls, fail = [], [True]

  def fake_run_point(point, workdir, search_paths, extra_bindings=(), write_operative=True):
    calls.append((point.name, os.path.basename(workdir), tuple(extra_bindings)))
    if point.name == failing and fail[0]:
      raise RuntimeError("boom")
    os.makedirs(os.path.join(workdir, "checkpoints", "1000000"), exist_ok=True)
    report.ResultsLog(workdir).record({"run": "G0I0", "split": "validation"})
    if write_operative:
      open(os.path.join(workdir, sweeps.OPERATIVE_NAME), "w").close()

  monkeypatch.setattr(sweep_cli, "run_point", fake_run_point)
  root = str(tmp_path / "root")
  outcome = sweep_cli.run_sweep(sweeps.load_sweep(TINY_SWEEP), root, keep_going=True,
                                log=lambda message: None)
  key = calls[0][1]
  assert calls[0] == (points[0].name, key, ("rest_loop.run.stop_after_phase = 'grow1'",))
  assert os.path.exists(os.path.join(root, sweeps.PREFIX_DIR, key, sweeps.PREFIX_DONE_NAME))
  assert [c[1:] for c in calls[1:]] == [(p.name, ()) for p in points]
  assert outcome[failing] == "failed: RuntimeError: boom"
  assert [v for k, v in outcome.items() if k != failing] == ["complete"] * 3
  # Again: finished points are skipped, the failed one (holding the prefix) resumes.
  calls.clear()
  fail[0] = False
  outcome = sweep_cli.run_sweep(sweeps.load_sweep(TINY_SWEEP), root, log=lambda message: None)
  assert calls == [(failing, failing, ())] and outcome[failing] == "complete"
  # Without keep_going a failure stops the sweep.
  monkeypatch.setattr(sweep_cli, "run_point", lambda *a, **k: 1 / 0)
  with pytest.raises(ZeroDivisionError):
    sweep_cli.run_sweep(sweeps.load_sweep(TINY_SWEEP), str(tmp_path / "other"),
                        log=lambda message: None)


# ------------------------------------------------------------------------------ aggregation


def _row(run, split, reward, **extra):
  g, i = int(run[1]), int(run[3])
  return {"run": run, "grow_step": g, "improve_step": i, "split": split, "mean_reward": reward,
          "bleu": reward / 2, "chrf": reward / 1.5, "loss": "bc", **extra}


def _assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE


def test_aggregate_table_plots_and_incomplete_points(tmp_path, capsys):
  root = tmp_path / "sweep"
  assert sweep_cli.main(["emit", f"--sweep={TINY_SWEEP}", f"--root={root}"]) == 0
  capsys.readouterr()
  points = _tiny_points()
  finals = {}
  for k, p in enumerate(points[:3]):
    log = report.ResultsLog(str(root / p.name))
    for split, offset in (("validation", 0.0), ("test", -1.0)):
      log.record(_row("G0I0", split, 40.0 + offset, best_of_n={"1": 40.0, "4": 45.0}))
      log.record(_row("G1I0", split, 44.0 + k + offset))
      if k < 2:  # The third point stopped after G1I0.
        finals[p.name] = 43.0 + 3 * k + offset
        log.record(_row("G1I1", split, finals[p.name] if split == "validation" else 42.0,
                        best_of_n={"1": 43.0, "4": 50.0 + k}))
    if k < 2:
      (root / p.name / sweeps.OPERATIVE_NAME).write_text("")
  assert aggregate_cli.main([f"--root={root}", f"--out={tmp_path / 'out'}"]) == 0
  printed = capsys.readouterr().out
  assert "| loss=reward_weighted_nll,tau=0.3 | reward_weighted_nll | 0.3 | not started |" in printed
  rows = list(csv.DictReader(open(tmp_path / "out" / "sweep_results.csv")))
  assert [r["point"] for r in rows] == [p.name for p in points]
  assert [r["status"] for r in rows] == ["complete", "complete", "incomplete", "not started"]
  first, second, third = rows[:3]
  assert (first["loss"], first["tau"]) == ("bc", "0.1")
  assert float(first["bc_reward"]) == 40.0 and float(first["final_reward"]) == 43.0
  assert first["final_run"] == "G1I1" and float(first["delta_reward"]) == 3.0
  assert first["best_run"] == "G1I0" and float(first["best_reward"]) == 44.0
  assert float(first["final_test_bleu"]) == 21.0 and float(first["bc_test_bleu"]) == 19.5
  assert float(first["delta_test_bleu"]) == 1.5
  assert second["best_run"] == "G1I1" and float(second["final_reward"]) == 46.0
  assert third["final_run"] == "G1I0" and rows[3]["bc_reward"] == ""
  markdown = (tmp_path / "out" / "sweep_results.md").read_text()
  assert "2 point(s) not finished" in markdown and "last recorded G1I0" in markdown
  for name in ("reward_per_step.png", "final_reward_bars.png", "best_of_n.png"):
    _assert_png(tmp_path / "out" / name)
  curves = aggregate_cli.best_of_n_curves(aggregate_cli.collect(str(root), [
      p.to_json() for p in points[:2]]))
  assert curves == {points[0].name: [(1, 43.0), (4, 50.0)],
                    points[1].name: [(1, 43.0), (4, 51.0)], "BC (G0I0)": [(1, 40.0), (4, 45.0)]}


def test_aggregate_over_seeds_gives_mean_and_sample_std_per_group(tmp_path, capsys):
  sweep_file = tmp_path / "seeds.sweep"
  sweep_file.write_text(repr(_spec(axes=[
      {"name": "loss", "binding": "ImproveConfig.losses", "values": {"bc": ("bc",),
                                                                      "gold_s": ("gold_s",)}},
      {"name": "seed", "binding": "SEED", "values": [0, 1, 2]}])))
  root = tmp_path / "sweep"
  assert sweep_cli.main(["emit", f"--sweep={sweep_file}", f"--root={root}"]) == 0
  capsys.readouterr()
  points = sweeps.expand(sweeps.load_sweep(str(sweep_file)))
  for p in points:
    axis = dict(p.axis_values)
    seed, shift = int(axis["seed"]), 10.0 if axis["loss"] == "gold_s" else 0.0
    log = report.ResultsLog(str(root / p.name))
    log.record(_row("G0I0", "validation", 40.0 + seed,
                    pass_at_k={"1": 30.0 + seed, "4": 50.0}, maj_at_k={"4": 45.0}))
    if not (axis["loss"] == "gold_s" and seed == 2):  # One seed stopped after BC.
      log.record(_row("G1I0", "validation", 44.0 + 2 * seed + shift,
                      pass_at_k={"1": 35.0, "4": 60.0 + seed}))
      log.record({"run": "online", "split": "validation", "mean_reward": 50.0 + seed})
    (root / p.name / sweeps.OPERATIVE_NAME).write_text("")
  assert aggregate_cli.main([f"--root={root}", f"--out={tmp_path / 'out'}"]) == 0
  printed = capsys.readouterr().out
  stats = {(s["group"], s["run"]): s
           for s in aggregate_cli.seed_statistics(
               aggregate_cli.collect(str(root), [p.to_json() for p in points]),
               ["loss", "seed"], "seed")}
  bc = stats[("loss=bc", "G0I0")]
  assert (bc["n"], bc["of"], bc["seeds"]) == (3, 3, ["0", "1", "2"])
  assert bc["metrics"]["mean_reward"] == pytest.approx((41.0, 1.0, 3))  # 40, 41, 42.
  assert bc["metrics"]["pass@1"] == pytest.approx((31.0, 1.0, 3))
  assert bc["metrics"]["pass@4"] == pytest.approx((50.0, 0.0, 3))
  assert bc["metrics"]["bleu"] == pytest.approx((20.5, 0.5, 3))
  gold = stats[("loss=gold_s", "G1I0")]  # Seeds 0 and 1 only: 54 and 56.
  assert (gold["n"], gold["of"]) == (2, 3)
  assert gold["metrics"]["mean_reward"] == pytest.approx((55.0, math.sqrt(2.0), 2))
  # Grow/Improve runs in order, then the online row.
  assert [s["run"] for s in aggregate_cli.seed_statistics(
      aggregate_cli.collect(str(root), [p.to_json() for p in points[:3]]), ["loss", "seed"],
      "seed")] == ["G0I0", "G1I0", "online"]
  assert "| loss=gold_s | G1I0 | 2/3 | 55.00 ± 1.41 |" in printed
  rows = list(csv.DictReader(open(tmp_path / "out" / "sweep_seeds.csv")))
  first = rows[0]
  assert (first["group"], first["run"], first["seeds"]) == ("loss=bc", "G0I0", "0 1 2")
  assert float(first["mean_reward mean"]) == 41.0 and float(first["mean_reward std"]) == 1.0
  _assert_png(tmp_path / "out" / "reward_per_step_seeds.png")
  assert aggregate_cli.main([f"--root={root}", "--seed_axis=lr"]) == 2
  assert "--seed_axis='lr' is not an axis of this sweep: ['loss', 'seed']" in (
      capsys.readouterr().err)


def test_aggregate_compares_rest_and_online_per_cost_over_seeds(tmp_path, capsys):
  """The shipped ReST-vs-online sweep's layout: per method, the paired change from each seed's
  BC and the mean ± std of costs; online curves averaged per step."""
  sweep_file = os.path.join(REPO, "experiments", "sweeps", "arith_rest_vs_online.sweep")
  root = tmp_path / "sweep"
  points = sweeps.expand(sweeps.load_sweep(sweep_file))
  assert [p.name for p in points] == [f"method={m},seed={s}" for m in ("rest_em", "rloo")
                                      for s in (0, 1, 2)]
  for p in points:
    seed, online = int(dict(p.axis_values)["seed"]), dict(p.axis_values)["method"] == "rloo"
    workdir = root / p.name
    log = report.ResultsLog(str(workdir))
    bc = 40.0 + 10 * seed  # Seeds' BC policies differ a lot; the changes from BC do not.
    for split, shift in (("validation", 0.0), ("test_l1", 5.0)):
      log.record(_row("G0I0", split, bc + shift, early_stopping_reward=bc))
    if online:
      for split, shift in (("validation", 0.0), ("test_l1", 5.0)):
        log.record({"run": "online_reinforce", "split": split, "mean_reward": bc + shift + seed,
                    "early_stopping_reward": bc + 2, "samples_drawn": 512,
                    "reward_calls": 512, "wall_s": 100.0 + seed})
      with open(workdir / "online_curve.jsonl", "w") as f:
        for step, gain in ((0, 0.0), (25, 1.0 + seed), (50, 2.0)):
          f.write(json.dumps({"step": step, "samples_drawn": 256 * step // 25,
                              "reward_calls": 256 * step // 25, "wall_s": 4.0 * step,
                              "validation_reward": bc + gain}) + "\n")
        f.write("garbled\n")
    else:
      for g in (1, 2):
        for split, shift in (("validation", 0.0), ("test_l1", 5.0)):
          log.record(_row(f"G{g}I0", split, bc + shift + 3 * g, early_stopping_reward=bc + 3 * g,
                          samples_drawn=48 * g, reward_calls=54 * g,
                          wall_s=None if seed == 2 else 50.0 * g + seed))
  assert aggregate_cli.main([f"--root={root}", f"--sweep={sweep_file}",
                             f"--out={tmp_path / 'out'}"]) == 0
  printed = capsys.readouterr().out
  text = (tmp_path / "out" / "sweep_cost.md").read_text()
  assert text in printed
  # Paired: the change from each seed's own BC (+6 every seed), not the spread of the BC scores.
  assert "| method=rest_em | G2I0 | 3/3 | 56.00 ± 10.00 (+6.00 ± 0.00) | 61.00 ± 10.00 (+6.00 ± " \
         "0.00) | 28.00 ± 5.00 | - | 96 | 108 | 100 ± 1 |" in text  # wall_s of seeds 0, 1 only.
  assert "| method=rest_em | G0I0 | 3/3 | 50.00 ± 10.00 | 55.00 ± 10.00 |" in text
  assert "| method=rloo | online_reinforce | 3/3 | 51.00 ± 11.00 (+1.00 ± 1.00) |" in text
  assert text.index("| method=rest_em | G1I0") < text.index("| method=rest_em | G2I0") < (
      text.index("| method=rloo | G0I0")) < text.index("| method=rloo | online_reinforce")
  groups = aggregate_cli.seed_groups(aggregate_cli.collect(str(root), [
      p.to_json() for p in points]), ["method", "seed"], "seed")
  rest, rloo = cost_comparison.series(groups)
  assert (rest["kind"], [p["run"] for p in rest["points"]]) == ("rest", ["G0I0", "G1I0", "G2I0"])
  assert rest["points"][2]["score"] == pytest.approx((6.0, 0.0, 3))
  assert rest["points"][2]["wall_s"] == pytest.approx((100.5, math.sqrt(0.5), 2))
  assert rloo["kind"] == "online" and len(rloo["points"]) == 3
  assert rloo["points"][1]["score"] == pytest.approx((2.0, 1.0, 3))  # Gains 1, 2, 3 at step 25.
  assert rloo["points"][1]["samples_drawn"] == pytest.approx((256.0, 0.0, 3))
  _assert_png(tmp_path / "out" / "reward_vs_cost.png")


def test_aggregate_needs_a_sweep_root(tmp_path, capsys):
  assert aggregate_cli.main([f"--root={tmp_path}"]) == 2
  assert "sweep.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_tiny_sweep_runs_end_to_end_and_aggregates(tmp_path, capsys):
  root = str(tmp_path / "tiny")
  sweep = sweeps.load_sweep(TINY_SWEEP)
  start = time.time()
  outcome = sweep_cli.run_sweep(sweep, root)
  elapsed = time.time() - start
  points = sweeps.expand(sweep)
  assert outcome == {p.name: "complete" for p in points}
  prefixes = os.listdir(os.path.join(root, sweeps.PREFIX_DIR))
  assert len([p for p in prefixes if not p.startswith(".")]) == 1  # BC + Grow ran once.
  by_point = {p.name: sweeps.read_rows(os.path.join(root, p.name)) for p in points}
  bc_rewards = set()
  for p in points:
    rows = {(r["run"], r["split"]): r for r in by_point[p.name]}
    assert {run for run, _ in rows} == {"G0I0", "G1I0", "G1I1"}
    axis = dict(p.axis_values)
    assert rows[("G1I1", "validation")]["loss"] == axis["loss"]
    assert rows[("G1I1", "validation")]["threshold"].endswith(f"tau={axis['tau']}")
    bc_rewards.add(rows[("G0I0", "validation")]["mean_reward"])
    assert os.path.exists(os.path.join(root, p.name, sweeps.OPERATIVE_NAME))
  assert len(bc_rewards) == 1  # Every point continued from the same BC policy.

  written = aggregate_cli.aggregate(root)
  table = {r["point"]: r for r in csv.DictReader(open(written["csv"]))}
  for p in points:
    rows = {(r["run"], r["split"]): r for r in by_point[p.name]}
    line = table[p.name]
    assert line["status"] == "complete" and line["final_run"] == "G1I1"
    assert math.isclose(float(line["final_reward"]), rows[("G1I1", "validation")]["mean_reward"])
    assert math.isclose(float(line["bc_reward"]), rows[("G0I0", "validation")]["mean_reward"])
    assert math.isclose(float(line["final_test_bleu"]), rows[("G1I1", "test")]["bleu"])
    assert math.isclose(float(line["delta_reward"]), rows[("G1I1", "validation")]["mean_reward"]
                        - rows[("G0I0", "validation")]["mean_reward"], abs_tol=1e-9)
  for name in ("reward_per_step", "final_reward_bars"):
    _assert_png(written[name])

  # A second run finds every point finished and runs nothing.
  start_again = time.time()
  assert set(sweep_cli.run_sweep(sweep, root).values()) == {"complete (skipped)"}
  print(f"tiny sweep: {elapsed:.0f} s for 4 points; rerun {time.time() - start_again:.1f} s")
