"""kill -9 torture: `python -m rest_jax.main` killed with SIGKILL at random moments, then re-run.

A resumed run must finish exactly like an uninterrupted one — the same results rows (one per
(run, split), every field equal), the same results.csv and bit-identical grown shards — whatever
instant the kills hit: mid-training, mid-Grow, between a phase's report and its checkpoint,
mid-save. The uninterrupted run also checks that a run writes nothing outside its workdir and
the TFDS data folder: it starts with an empty $TMPDIR and a fresh TFDS folder (so the shipped
corpus is prepared, which used to leave `tmp*tfds` folders behind), and both must stay clean.

Kill moments: the uninterrupted run's progress is recorded as it goes (latest checkpoint step,
grown shards, result rows); each kill waits for a random recorded point still ahead of the
resumed run and then a random 0-3 s, so kills land in every phase however fast the machine is.
Bounded for the suite (about 2-3 minutes on 2 CPU cores): one uninterrupted run and one trial of
KILLS kills. REST_JAX_TORTURE_TRIALS / REST_JAX_TORTURE_KILLS make it longer and
REST_JAX_TORTURE_SEED repeats a trial's choices (the seed and kill points are printed).
"""

import csv
import glob
import json
import os
import random
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = [sys.executable, "-m", "rest_jax.main", "--gin_file=test/tiny_e2e.gin",
           "--gin.rest_loop.run.num_grow_steps=2"]
TRIALS = int(os.environ.get("REST_JAX_TORTURE_TRIALS", "1"))
KILLS = int(os.environ.get("REST_JAX_TORTURE_KILLS", "3"))

pytestmark = pytest.mark.slow


def _env(system_tmp, tfds_dir):
  env = dict(os.environ, TMPDIR=str(system_tmp), TFDS_DATA_DIR=str(tfds_dir))
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _start(workdir, env, log):
  return subprocess.Popen(COMMAND + [f"--workdir={workdir}"], env=env, cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT)


def _tail(path, lines=40):
  with open(path, encoding="utf-8", errors="replace") as f:
    return "".join(f.readlines()[-lines:])


def _progress(workdir):
  """How far a run got, comparable across runs and increasing over a run: (latest checkpoint
  step, grown shards, result rows)."""
  checkpoints = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(checkpoints) if n.isdigit()] \
      if os.path.isdir(checkpoints) else []
  shards = len(glob.glob(os.path.join(workdir, "grown", "grow_*", "shard-*.npz")))
  rows = 0
  try:
    with open(os.path.join(workdir, "results.jsonl"), encoding="utf-8") as f:
      rows = sum(1 for _ in f)
  except FileNotFoundError:
    pass
  return (max(steps, default=-1), shards, rows)


def _watch(process, workdir, target=None, delay=0.0):
  """Polls a running process's workdir. Without `target`: waits for the end and returns every
  distinct progress seen. With one: SIGKILLs the process `delay` seconds after its progress
  reaches `target`; returns whether it was killed (False: it ended first)."""
  seen = []
  while process.poll() is None:
    progress = _progress(workdir)
    if not seen or progress != seen[-1]:
      seen.append(progress)
    if target is not None and progress >= target:
      time.sleep(delay)
      if process.poll() is not None:
        return False
      process.kill()  # SIGKILL.
      process.wait()
      return True
    time.sleep(0.1)
  return seen if target is None else False


# Wall-clock seconds after BC (rows of Improve rounds): the one field a kill may change.
TIMING_FIELDS = ("wall_s",)


def _outputs(workdir):
  """What must not depend on kills: the rows and the csv (but their wall times) and every grown
  shard's bytes."""
  with open(os.path.join(workdir, "results.jsonl"), encoding="utf-8") as f:
    rows = [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in f]
  with open(os.path.join(workdir, "results.csv"), encoding="utf-8", newline="") as f:
    table = list(csv.reader(f))
  keep = [i for i, name in enumerate(table[0]) if name not in TIMING_FIELDS]
  csv_bytes = [[line[i] for i in keep] for line in table]
  shards = {}
  for path in sorted(glob.glob(os.path.join(workdir, "grown", "grow_*", "shard-*.npz"))):
    with open(path, "rb") as f:
      shards[os.path.relpath(path, workdir)] = f.read()
  return rows, csv_bytes, shards


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  root = tmp_path_factory.mktemp("uninterrupted")
  system_tmp, tfds_dir, log = root / "system_tmp", root / "tfds", root / "log.txt"
  system_tmp.mkdir()
  env = _env(system_tmp, tfds_dir)
  start = time.monotonic()
  with open(log, "w") as f:
    process = _start(root / "workdir", env, f)
    milestones = _watch(process, root / "workdir")
  assert process.returncode == 0, _tail(log)
  return {"root": root, "seconds": time.monotonic() - start, "env": env,
          "milestones": milestones, "outputs": _outputs(root / "workdir")}


def test_a_run_writes_only_into_its_workdir_and_the_tfds_folder(uninterrupted):
  root = uninterrupted["root"]
  assert sorted(os.listdir(root / "system_tmp")) == []  # No tmp*tfds, no autograph modules.
  assert not os.path.exists(root / "workdir" / "tmp")  # The run's own temp folder is gone.
  assert os.path.isdir(root / "tfds" / "ding_de_en")  # The corpus was prepared there.
  rows = uninterrupted["outputs"][0]
  assert len(rows) == len({(r["run"], r["split"]) for r in rows}) == 10  # 5 runs x 2 splits.


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(uninterrupted, tmp_path,
                                                                    trial):
  seed = int(os.environ.get("REST_JAX_TORTURE_SEED", random.SystemRandom().randrange(10**6)))
  rng = random.Random(seed + trial)
  workdir, log = tmp_path / "workdir", tmp_path / "log.txt"
  env = uninterrupted["env"]  # Its TFDS folder is prepared; its $TMPDIR must stay empty.
  kills = []
  with open(log, "w") as f:
    for _ in range(KILLS):
      # A random point of the uninterrupted run's progress among the next 1/(kills left) of
      # what is still ahead, then a random delay: the kill lands anywhere in the work that
      # follows it (training, sampling, a report, a save), and the kills spread over the run.
      ahead = [m for m in uninterrupted["milestones"] if m > _progress(workdir)]
      if not ahead:
        break
      window = ahead[:max(1, len(ahead) // (KILLS - len(kills)))]
      target, delay = rng.choice(window), rng.uniform(0.0, 3.0)
      if not _watch(_start(workdir, env, f), workdir, target, delay):
        break  # It finished first.
      kills.append(f"{target}+{delay:.1f}s")
    code = _start(workdir, env, f).wait(timeout=900)
  print(f"torture trial {trial}: seed {seed}, uninterrupted run "
        f"{uninterrupted['seconds']:.0f} s; killed at (latest checkpoint, shards, rows)+delay: "
        + ", ".join(kills))
  assert code == 0, _tail(log)
  assert kills, "no kill landed before the run finished"
  rows, csv_bytes, shards = _outputs(workdir)
  reference_rows, reference_csv, reference_shards = uninterrupted["outputs"]
  assert rows == reference_rows, f"seed {seed}, kills {kills}"
  assert csv_bytes == reference_csv
  assert shards.keys() == reference_shards.keys()
  assert all(shards[k] == reference_shards[k] for k in shards), "a grown shard differs"
  assert not glob.glob(str(workdir / "**" / "*.unreadable"), recursive=True)
  assert not os.path.exists(workdir / "tmp")  # Killed runs' temp folders were cleaned up.
  assert sorted(os.listdir(uninterrupted["root"] / "system_tmp")) == []
