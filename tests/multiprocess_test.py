"""Two CPU processes (jax.distributed + gloo) run a tiny ReST loop like one process does."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from rest_jax import grown_data

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("mean_reward", "bleu", "chrf", "length_ratio", "distinct_1", "distinct_2",
           "num_grown", "num_kept", "best_step", "early_stopping_reward")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _command(workdir, *extra):
  return [sys.executable, "-m", "rest_jax.main", "--gin_file=test/tiny_multiprocess.gin",
          f"--workdir={workdir}", *extra]


def _rows(workdir):
  with open(os.path.join(workdir, "results.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {(r["run"], r["split"]): tuple(r[m] for m in METRICS) for r in rows}


def test_two_processes_match_one_process(tmp_path):
  single = tmp_path / "single"
  subprocess.run(_command(single), env=_env(4), cwd=REPO, check=True, timeout=900,
                 stdout=subprocess.DEVNULL)
  multi = tmp_path / "multi"
  port = _free_port()
  procs = [subprocess.Popen(_command(multi, "--multiprocess",
                                     f"--coordinator_address=localhost:{port}",
                                     "--num_processes=2", f"--process_id={i}"),
                            env=_env(2), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  errors = [p.communicate(timeout=900)[1] for p in procs]
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-4000:]
  # Each process wrote its own grown shards; only process 0 wrote the reports.
  # Shards interleave over processes (process p writes shards p, p + 2, ...), so the complete
  # set is an even number of shards named 0..N-1 of N.
  shards = sorted(s for s in os.listdir(multi / "grown" / "grow_1") if s.startswith("shard-"))
  num = int(shards[0].split("-of-")[1].split(".")[0])
  assert num % 2 == 0 and num >= 2
  assert shards == sorted(f"shard-{i:05d}-of-{num:05d}.npz{suffix}" for i in range(num)
                          for suffix in ("", ".wall_s"))  # Each shard and its sampling time.
  assert _rows(multi) == _rows(single)
  assert set(_rows(single)) == {("G0I0", "validation"), ("G0I0", "test"),
                                ("G1I0", "validation"), ("G1I0", "test")}
  # The grown data is the same record for record, whatever the process layout.
  one, two = (grown_data.GrowStore(str(w / "grown"), 1).read_all() for w in (single, multi))
  np.testing.assert_array_equal(one.source_id, two.source_id)
  np.testing.assert_array_equal(one.reward, two.reward)
  assert all(np.array_equal(a, b) for a, b in zip(one.sample_tokens, two.sample_tokens))
  assert one.sample_text == two.sample_text
