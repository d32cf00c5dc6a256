"""Preemption: SIGTERM makes a run checkpoint at the next step boundary and exit with status 75;
the same command then resumes it and finishes exactly like an uninterrupted run.

The SIGTERM test runs `rest_jax.main` in a subprocess whose batch function pauses at one BC step
until the signal has arrived (so the signal lands mid-phase, mid-step, on any machine), sends it
from the test, and resumes in this process. Every train step logs its loss to TensorBoard
(`log_every=1`), which shows the steps the killed run trained; the resumed run logs the step it
resumes at.
"""

import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from rest_jax import grown_data, preemption
from rest_loop_test import _metrics, run_experiment  # The tiny e2e run and its metrics.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BC_STEPS, PAUSE_AT = 24, 15  # BC's mid-phase checkpoint (eval_every) is at step 12.
BINDINGS = ["rest_loop.run.num_grow_steps=0", f"bc/TrainPhaseConfig.max_steps={BC_STEPS}",
            "bc/TrainPhaseConfig.eval_every=12", "bc/TrainPhaseConfig.log_every=1"]
GROW_BINDINGS = BINDINGS[1:] + ["rest_loop.run.num_grow_steps=1",
                                 "rest_loop.run.stop_after_phase='grow1'"]

# The child: rest_jax.main, with BC's batch for step PAUSE_AT held back until SIGTERM arrived.
CHILD = r"""
import sys, time
from rest_jax import batching, main, preemption
pause_at = int(sys.argv[1])
original = batching.BatchSchedule.batch
def batch(self, step):
  if step == pause_at and not preemption.requested():
    print(f"paused at step {step}", flush=True)
    while not preemption.requested():
      time.sleep(0.01)
  return original(self, step)
batching.BatchSchedule.batch = batch
main.run_cli(["rest_jax.main"] + sys.argv[2:])
"""

pytestmark = pytest.mark.slow




def _jsonl(workdir):
  with open(os.path.join(workdir, "results.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _logged_steps(workdir, tag):
  """{event file: [steps]} of one TensorBoard scalar tag."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    out[path] = [e.step for e in tf.compat.v1.train.summary_iterator(path)
                 if any(v.tag == tag for v in e.summary.value)]
  return out


@pytest.fixture(scope="module")
def bc_reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("bc_reference")
  return workdir, run_experiment(workdir, *BINDINGS)


def test_sigterm_mid_phase_checkpoints_exits_75_and_resumes_without_redoing_steps(
    bc_reference, tmp_path, caplog):
  workdir, log_path = tmp_path / "w", tmp_path / "log.txt"
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  argv = [sys.executable, "-c", CHILD, str(PAUSE_AT), "--gin_file=test/tiny_e2e.gin",
          f"--workdir={workdir}"] + [f"--gin.{b}" for b in BINDINGS]
  with open(log_path, "w") as log:
    child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log,
                             text=True)
    for line in child.stdout:
      if line.startswith("paused at step"):
        child.send_signal(signal.SIGTERM)
        break
    child.stdout.read()
    code = child.wait()
  log_text = open(log_path, encoding="utf-8").read()
  assert code == preemption.EXIT_CODE == 75, log_text[-3000:]
  assert "SIGTERM received" in log_text and "Preempted: bc: stopped after step" in log_text
  # The step in flight (index PAUSE_AT, the PAUSE_AT+1-th) finished and was checkpointed.
  steps = sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())
  assert steps[-1] == PAUSE_AT + 1, steps
  assert not os.path.exists(workdir / "results.jsonl")  # BC never finished.

  (killed,) = _logged_steps(workdir, "train/bc/loss").values()
  assert killed == list(range(1, PAUSE_AT + 2))  # The steps the killed run trained.

  with caplog.at_level(logging.INFO, logger="rest_jax"):
    rows = run_experiment(workdir, *BINDINGS)
  (resumed_at,) = [int(m.group(1)) for r in caplog.records
                   if (m := re.fullmatch(r"Resuming at phase bc, step (\d+)\.", r.getMessage()))]
  assert killed[-1] - resumed_at <= 1  # At most one step redone (here none: 16 - 16).
  assert resumed_at == PAUSE_AT + 1
  # TensorBoard holds each step once (the resumed run's writer skips logged steps).
  logged = [s for steps in _logged_steps(workdir, "train/bc/loss").values() for s in steps]
  assert sorted(logged) == list(range(1, BC_STEPS + 1))
  reference_dir, reference_rows = bc_reference
  assert _metrics(rows) == _metrics(reference_rows)
  assert _jsonl(workdir) == _jsonl(reference_dir)


def test_preempted_grow_keeps_its_shards_and_resumes_at_the_next_one(bc_reference, tmp_path,
                                                                     monkeypatch):
  """A stop request during Grow ends the run after the shard being written; the resumed run
  writes only the missing shards, and they equal an uninterrupted run's byte for byte."""
  reference_dir, _ = bc_reference
  uninterrupted = shutil.copytree(reference_dir, tmp_path / "uninterrupted")
  run_experiment(uninterrupted, *GROW_BINDINGS)
  workdir = shutil.copytree(reference_dir, tmp_path / "w")
  original_write = grown_data.GrowStore.write_shard
  written = []

  def write_then_request(self, index, num_shards, records, **kwargs):
    original_write(self, index, num_shards, records, **kwargs)
    written.append(index)
    if len(written) == 2:
      preemption.request()

  monkeypatch.setattr(grown_data.GrowStore, "write_shard", write_then_request)
  try:
    with pytest.raises(preemption.Preempted, match="Grow step 1: stopped after shard 1 of"):
      run_experiment(workdir, *GROW_BINDINGS)
  finally:
    preemption.reset()
  store = grown_data.GrowStore(str(workdir / "grown"), 1)
  assert len(store.shard_files()) == 2
  kept = {path: os.stat(path).st_mtime_ns for path in store.shard_files()}

  run_experiment(workdir, *GROW_BINDINGS)
  assert {path: os.stat(path).st_mtime_ns for path in kept} == kept  # Not rewritten.
  assert written[2] == 2  # The resumed Grow started at the first missing shard.
  assert len(store.shard_files()) == len(written) == 16
  for path in grown_data.GrowStore(str(uninterrupted / "grown"), 1).shard_files():
    with open(path, "rb") as a, open(workdir / os.path.relpath(path, uninterrupted), "rb") as b:
      assert a.read() == b.read(), path
