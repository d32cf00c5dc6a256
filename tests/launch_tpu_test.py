"""TPU VM launch commands: exact gcloud argv sequences, the worker-side shell run for real in bash,
the CLI's --dry_run output and its errors. No network, no gcloud."""

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from rest_jax.launch import tpu
from rest_jax.launch.tpu import TpuConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "tpu_vm.py")
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QUEUED = ["gcloud", "compute", "tpus", "queued-resources"]
ZONE = "--zone=us-central2-b"
PIP = ("cd ~/rest_jax && python3 -m pip install -e '.[tpu]' "
       "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html")


def _cfg(**kw):
  fields = dict(name="rest-test", zone="us-central2-b", accelerator_type="v4-8")
  fields.update(kw)
  return TpuConfig(**fields)


def _remote_command(argv):
  (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return command


# --- create / delete / status ----------------------------------------------------------------


def test_create_direct_and_spot():
  assert tpu.create_commands(_cfg()) == [TPU_VM + [
      "create", "rest-test", ZONE, "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"]]
  cfg = _cfg(spot=True, project="my-proj", network="net1",
             service_account="sa@my-proj.iam.gserviceaccount.com")
  assert tpu.create_commands(cfg) == [TPU_VM + [
      "create", "rest-test", ZONE, "--project=my-proj", "--accelerator-type=v4-8",
      "--version=tpu-ubuntu2204-base", "--spot", "--network=net1",
      "--service-account=sa@my-proj.iam.gserviceaccount.com"]]
  assert tpu.create_commands(_cfg(preemptible=True))[0][-1] == "--preemptible"


def test_create_queued_requests_then_waits_until_active():
  cfg = _cfg(accelerator_type="v5litepod-16", queued=True, spot=True, valid_until_duration="6h")
  create, wait = tpu.create_commands(cfg)
  assert create == QUEUED + [
      "create", "rest-test-qr", ZONE, "--node-id=rest-test", "--accelerator-type=v5litepod-16",
      "--runtime-version=v2-alpha-tpuv5-lite", "--spot", "--valid-until-duration=6h"]
  assert wait[:2] == ["bash", "-c"]
  assert ("gcloud compute tpus queued-resources describe rest-test-qr --zone=us-central2-b "
          "'--format=value(state.state)'") in wait[2]
  assert "ACTIVE) exit 0" in wait[2] and "FAILED" in wait[2]


@pytest.mark.parametrize("accelerator, runtime, hosts", [
    ("v2-8", "tpu-ubuntu2204-base", 1), ("v3-32", "tpu-ubuntu2204-base", 4),
    ("v4-8", "tpu-ubuntu2204-base", 1), ("v4-32", "tpu-ubuntu2204-base", 4),
    ("v5p-16", "v2-alpha-tpuv5", 2), ("v5litepod-8", "v2-alpha-tpuv5-lite", 1),
    ("v5litepod-16", "v2-alpha-tpuv5-lite", 4), ("v6e-64", "v2-alpha-tpuv6e", 16),
])
def test_runtime_default_and_host_count(accelerator, runtime, hosts):
  cfg = _cfg(accelerator_type=accelerator)
  assert (cfg.runtime_version, cfg.num_hosts, cfg.use_multiprocess) == (runtime, hosts, hosts > 1)
  assert _cfg(accelerator_type=accelerator, runtime_version="custom-1").runtime_version == \
      "custom-1"


def test_delete_and_status():
  assert tpu.delete_commands(_cfg()) == [TPU_VM + ["delete", "rest-test", ZONE]]
  assert tpu.delete_commands(_cfg(), yes=True) == [TPU_VM + ["delete", "rest-test", ZONE,
                                                             "--quiet"]]
  # --force deletes the queued resource's VM first, then the queued resource.
  assert tpu.delete_commands(_cfg(queued=True, queued_resource_id="my-qr")) == [
      QUEUED + ["delete", "my-qr", ZONE, "--force"]]
  assert tpu.status_commands(_cfg()) == [TPU_VM + ["describe", "rest-test", ZONE]]
  assert tpu.status_commands(_cfg(queued=True)) == [QUEUED + ["describe", "rest-test-qr", ZONE]]


# --- setup -----------------------------------------------------------------------------------


def test_setup_local_uploads_a_tarball_to_every_worker(monkeypatch, tmp_path):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  tarball = str(tmp_path / "rest_jax_src-rest-test.tar.gz")
  commands = tpu.setup_commands(_cfg(local_repo="/src/repo", exclude=("runs",)))
  excludes = ["--exclude=" + p for p in tpu.UPLOAD_EXCLUDES + ("runs",)]
  assert commands == [
      ["tar", "-czf", tarball, *excludes, "-C", "/src/repo", "."],
      TPU_VM + ["scp", tarball, "rest-test:~/rest_jax_src.tar.gz", ZONE, "--worker=all"],
      TPU_VM + ["ssh", "rest-test", ZONE, "--worker=all",
                "--command=mkdir -p ~/rest_jax && tar -xzf ~/rest_jax_src.tar.gz -C ~/rest_jax "
                "&& rm -f ~/rest_jax_src.tar.gz"],
      TPU_VM + ["ssh", "rest-test", ZONE, "--worker=all", "--command=" + PIP]]


def test_setup_local_tarball_round_trip(monkeypatch, tmp_path):
  """The tar and unpack commands, run for real: code arrives, .git and caches do not."""
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  repo, home = tmp_path / "repo", tmp_path / "home"
  for path in ("setup.py", "experiments/a.gin", ".git/HEAD", "rest_jax/__pycache__/x.pyc",
               "runs/ckpt"):
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text("x")
  home.mkdir()
  tar, _, unpack, _ = tpu.setup_commands(_cfg(local_repo=str(repo), exclude=("runs",)))
  subprocess.run(tar, check=True)
  for _ in range(2):  # setup may be re-run: it overlays the same directory
    shutil.copy(tar[2], home / "rest_jax_src.tar.gz")  # what scp does
    _bash(_remote_command(unpack), home)
  files = sorted(os.path.relpath(os.path.join(d, f), home / "rest_jax")
                 for d, _, fs in os.walk(home / "rest_jax") for f in fs)
  assert files == ["experiments/a.gin", "setup.py"]
  assert not (home / "rest_jax_src.tar.gz").exists()


def test_setup_git_clones_on_every_worker(tmp_path):
  cfg = _cfg(source="git", git_url="https://example.com/r.git", git_ref="v1")
  clone, install = tpu.setup_commands(cfg)
  assert clone == TPU_VM + ["ssh", "rest-test", ZONE, "--worker=all", (
      "--command=(test -d ~/rest_jax/.git || git clone --quiet https://example.com/r.git "
      "~/rest_jax) && cd ~/rest_jax && git fetch --quiet origin v1 && "
      "git checkout --quiet --detach FETCH_HEAD && git log -1 --oneline")]
  assert install == TPU_VM + ["ssh", "rest-test", ZONE, "--worker=all", "--command=" + PIP]


def test_setup_git_script_clones_and_updates_for_real(tmp_path):
  origin, home = tmp_path / "origin", tmp_path / "home"
  git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
  origin.mkdir(), home.mkdir()
  subprocess.run(["git", "init", "-q", str(origin)], check=True)
  for version in ("1", "2"):
    (origin / "VERSION").write_text(version)
    subprocess.run(git + ["add", "VERSION"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", version], check=True)
    (clone, _) = tpu.setup_commands(_cfg(source="git", git_url=str(origin)))
    _bash(_remote_command(clone), home)  # first a clone, then a fetch + checkout
    assert (home / "rest_jax" / "VERSION").read_text() == version


# --- run / wait / stop / logs ----------------------------------------------------------------


def test_run_command_on_all_workers():
  cfg = _cfg(accelerator_type="v4-32", gin_files=("wmt20_zh_en/rest.gin",),
             workdir="gs://bkt/wmt20", env=("REST_JAX_TSV_DIR=gs://bkt/data", "A=x y"),
             gin_bindings=("rest_loop.run.num_grow_steps=2", "REWARD='learned:path=/rm'"))
  (argv,) = tpu.run_commands(cfg)
  assert argv[:-1] == TPU_VM + ["ssh", "rest-test", ZONE, "--worker=all"]
  outer = _remote_command(argv)
  assert outer.startswith("set -e; cd ~/rest_jax; mkdir -p ~/rest_jax_logs; ")
  assert "nohup setsid bash -c " in outer
  assert ">> ~/rest_jax_logs/rest_jax.log 2>&1 < /dev/null & echo $! > ~/rest_jax_logs/rest_jax.pid"\
      in outer
  job = shlex.split(outer.split("nohup setsid bash -c ", 1)[1])[0]
  assert job.startswith("trap ") and " TERM; " in job  # The wrapper outlives SIGTERM.
  assert shlex.split(job.split("; ")[2]) == [
      "env", "REST_JAX_TSV_DIR=gs://bkt/data", "A=x y", "python3", "-u", "-m", "rest_jax.main",
      "--gin_file=wmt20_zh_en/rest.gin", "--workdir=gs://bkt/wmt20", "--multiprocess",
      "--gin.rest_loop.run.num_grow_steps=2", "--gin.REWARD='learned:path=/rm'"]
  assert tpu.main_argv(_cfg(gin_files=("a.gin",), workdir="w")) == [
      "python3", "-u", "-m", "rest_jax.main", "--gin_file=a.gin", "--workdir=w"]


def _bash(script, home, check=True):
  env = dict(os.environ, HOME=str(home))
  result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=30)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def _fake_worker(tmp_path):
  """A home with ~/rest_jax and a stand-in interpreter that records its argv and environment."""
  home = tmp_path / "home"
  (home / "rest_jax").mkdir(parents=True)
  fake = tmp_path / "fake_python"
  fake.write_text(f"#!{sys.executable}\n" + (
      "import json, os, signal, sys, time\n"
      "signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))  # As rest_jax.main does.\n"
      "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'A': os.environ.get('A')},"
      " open(os.environ['RECORD'], 'w'))\n"
      "print('training step 1', flush=True)\n"
      "time.sleep(float(os.environ['FAKE_SLEEP']))\n"
      "sys.exit(int(os.environ['FAKE_EXIT']))\n"))
  fake.chmod(0o755)
  return home, str(fake)


def _wait_for(path, seconds=20):
  deadline = time.time() + seconds
  while not os.path.exists(path):
    assert time.time() < deadline, f"{path} never appeared"
    time.sleep(0.05)


def test_run_wait_logs_on_a_worker_for_real(tmp_path):
  """The detached start, the exit status, the wait and the logs, executed by bash."""
  home, fake = _fake_worker(tmp_path)
  record = tmp_path / "record.json"
  cfg = _cfg(python=fake, gin_files=("a.gin",), workdir="gs://bkt/w",
             gin_bindings=("REWARD='learned:path=/x y'",),
             env=(f"RECORD={record}", "A=two words", "FAKE_SLEEP=0", "FAKE_EXIT=3"))
  started = _bash(_remote_command(tpu.run_commands(cfg)[0]), home)
  assert "started rest_jax" in started.stdout
  waited = _bash(tpu.remote_wait_script(cfg, poll_seconds=0.05), home, check=False)
  assert waited.returncode == 3
  assert "=== rest_jax exited with status 3 ===" in waited.stdout
  recorded = json.loads(record.read_text())
  assert recorded == {"argv": ["-u", "-m", "rest_jax.main", "--gin_file=a.gin",
                               "--workdir=gs://bkt/w", "--gin.REWARD='learned:path=/x y'"],
                      "cwd": str(home / "rest_jax"), "A": "two words"}
  logs = _bash(tpu.remote_logs_script(cfg, "0", lines=5, follow=False), home)
  assert "training step 1" in logs.stdout
  all_logs = _bash(tpu.remote_logs_script(cfg, "all", lines=5, follow=False), home)
  assert all_logs.stdout.splitlines()[-1].startswith(f"[{os.uname().nodename}] ===")


def test_run_refuses_while_running_and_stop_ends_it(tmp_path):
  home, fake = _fake_worker(tmp_path)
  cfg = _cfg(python=fake, gin_files=("a.gin",), workdir="w", run_name="long",
             env=(f"RECORD={tmp_path / 'r.json'}", "FAKE_SLEEP=60", "FAKE_EXIT=0"))
  script = _remote_command(tpu.run_commands(cfg)[0])
  _bash(script, home)
  pid = int((home / "rest_jax_logs" / "long.pid").read_text())
  try:
    _wait_for(tmp_path / "r.json")
    again = _bash(script, home, check=False)
    assert again.returncode == 1 and "long is still running" in again.stderr
    assert "stopped long" in _bash(tpu.remote_stop_script(cfg), home).stdout
    waited = _bash(tpu.remote_wait_script(cfg, poll_seconds=0.05), home, check=False)
    # The run's SIGTERM status reaches `wait` (the wrapper shell survives the signal).
    assert waited.returncode == tpu.PREEMPTED_EXIT_CODE == 75, waited.stderr
    assert "=== long got SIGTERM ===" in waited.stdout
    assert "=== long exited with status 75 ===" in waited.stdout
    assert "long is not running" in _bash(tpu.remote_stop_script(cfg), home).stdout
  finally:
    subprocess.run(["kill", "-KILL", "--", f"-{pid}"], capture_output=True)


def test_wait_and_logs_commands():
  assert tpu.wait_commands(_cfg())[0][:-1] == TPU_VM + ["ssh", "rest-test", ZONE, "--worker=0"]
  assert tpu.logs_commands(_cfg()) == [TPU_VM + [
      "ssh", "rest-test", ZONE, "--worker=0",
      "--command=tail -n 100 -F ~/rest_jax_logs/rest_jax.log"]]
  (argv,) = tpu.logs_commands(_cfg(accelerator_type="v4-32", run_name="g1"), "all", 20)
  assert argv[-2:] == ["--worker=all", "--command=tail -n 20 -F ~/rest_jax_logs/g1.log | "
                       'sed -u "s/^/[$(hostname)] /"']
  assert tpu.logs_commands(_cfg(accelerator_type="v4-32"), "3")[0][-2] == "--worker=3"
  with pytest.raises(ValueError, match=r"worker='4' is invalid: expected 'all' or 0..3"):
    tpu.logs_commands(_cfg(accelerator_type="v4-32"), "4")


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_uses_gsutil_for_gcs_and_scp_otherwise():
  assert tpu.fetch_commands(_cfg(workdir="gs://bkt/runs/g1/"), "out") == [
      ["mkdir", "-p", "out/g1"], ["gsutil", "-m", "rsync", "-r", "gs://bkt/runs/g1/", "out/g1"]]
  assert tpu.fetch_commands(_cfg(workdir="runs/g1"), "out") == [
      ["mkdir", "-p", "out"],
      TPU_VM + ["scp", "rest-test:~/rest_jax/runs/g1", "out", ZONE, "--recurse", "--worker=0"]]
  assert tpu.fetch_commands(_cfg(workdir="/data/g1"))[1][5] == "rest-test:/data/g1"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="Rest_Test"), r"TpuConfig.name='Rest_Test' is invalid: expected 1-63 lowercase"),
    (dict(zone="uscentral"), r"TpuConfig.zone='uscentral' is invalid: expected a Cloud zone"),
    (dict(accelerator_type="v4-12"), r"accelerator_type='v4-12' .*multiple of 8"),
    (dict(accelerator_type="v5litepod-12"), r"v5litepod sizes count chips: \[1, 4, 8, 16"),
    (dict(accelerator_type="v7-8"), r"accelerator_type='v7-8' .*FAMILY in \['v2', 'v3'"),
    (dict(spot=True, preemptible=True), r"TpuConfig.preemptible=True .*choose one"),
    (dict(queued=True, preemptible=True), r"queued resources take spot=True"),
    (dict(valid_until_duration="6h"), r"valid_until_duration='6h' .*only queued"),
    (dict(queued=True, valid_until_duration="6 hours"), r"expected a duration such as '6h'"),
    (dict(source="svn"), r"TpuConfig.source='svn' is invalid: allowed: \('local', 'git'\)"),
    (dict(source="git"), r"TpuConfig.git_url='' is invalid: required when source='git'"),
    (dict(env=("1X=2",)), r"TpuConfig.env='1X=2' is invalid: expected KEY=VALUE"),
    (dict(gin_bindings=("--gin.a=1",)), r"gin_bindings='--gin.a=1' .*no '--gin.' prefix"),
    (dict(gin_bindings=("a",)), r"gin_bindings='a' .*expected NAME=VALUE"),
    (dict(workdir="~/runs/x"), r"workdir='~/runs/x' .*'~' is not expanded"),
    (dict(workdir="s3://b/x"), r"workdir='s3://b/x' .*expected gs://BUCKET/PATH"),
    (dict(workdir="gs://B/x"), r"workdir='gs://B/x' .*BUCKET being 3-63"),
    (dict(remote_dir="~/my code"), r"TpuConfig.remote_dir='~/my code' is invalid"),
    (dict(accelerator_type="v4-32", multiprocess=False), r"v4-32 has 4 hosts; they must join"),
    (dict(gin_files="a.gin"), r"gin_files='a.gin' .*sequence of strings"),
])
def test_invalid_config_names_field_and_allowed_values(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _cfg(**kwargs)


def test_verbs_require_what_they_use():
  with pytest.raises(ValueError, match=r"TpuConfig.workdir='' is invalid: required for run"):
    tpu.run_commands(_cfg(gin_files=("a.gin",)))
  with pytest.raises(ValueError, match=r"TpuConfig.gin_files=\(\) is invalid: required for run"):
    tpu.run_commands(_cfg(workdir="gs://bkt/w"))
  with pytest.raises(ValueError, match=r"accelerator_type='' is invalid: required for create"):
    tpu.create_commands(_cfg(accelerator_type=""))
  with pytest.raises(ValueError, match=r"workdir='' is invalid: required for fetch"):
    tpu.fetch_commands(_cfg())
  local = dict(accelerator_type="v4-32", gin_files=("a.gin",), workdir="/tmp/w")
  with pytest.raises(ValueError, match=r"v4-32 has 4 hosts .*orbax needs one shared directory"):
    tpu.run_commands(_cfg(**local))
  assert tpu.run_commands(_cfg(allow_local_workdir=True, **local))
  assert "each worker writes its own copy" in tpu.workdir_warnings(
      _cfg(allow_local_workdir=True, **local))[0]
  assert "a preemption deletes" in tpu.workdir_warnings(_cfg(workdir="w", spot=True))[0]
  assert tpu.workdir_warnings(_cfg(workdir="gs://bkt/w", spot=True)) == []


# --- the CLI ---------------------------------------------------------------------------------


def _cli(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        cwd=REPO, timeout=60)


def test_cli_all_dry_run_prints_the_whole_sequence():
  flags = ["--name=rest-wmt", "--zone=us-central2-b", "--accelerator_type=v4-32", "--spot",
           "--gin_file=wmt20_zh_en/rest.gin", "--workdir=gs://bkt/wmt20",
           "--env=REST_JAX_TSV_DIR=gs://bkt/data", "--gin=rest_loop.run.num_grow_steps=2"]
  result = _cli("all", "--dry_run", "--wait", *flags)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  cfg = TpuConfig(name="rest-wmt", zone="us-central2-b", accelerator_type="v4-32", spot=True,
                  local_repo=REPO, gin_files=("wmt20_zh_en/rest.gin",), workdir="gs://bkt/wmt20",
                  env=("REST_JAX_TSV_DIR=gs://bkt/data",),
                  gin_bindings=("rest_loop.run.num_grow_steps=2",))
  assert lines == [shlex.join(argv) for argv in tpu.all_commands(cfg, wait=True)]
  assert len(lines) == 7  # create, tar, scp, unpack, pip, run, wait
  assert lines[0] == ("gcloud compute tpus tpu-vm create rest-wmt --zone=us-central2-b "
                      "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot")
  assert [shlex.split(line)[:5] for line in lines[2:]] == [TPU_VM + ["scp"]] + [
      TPU_VM + ["ssh"]] * 4
  assert "--worker=all" in shlex.split(lines[5]) and "--worker=0" in shlex.split(lines[6])
  assert "--multiprocess" in _remote_command(shlex.split(lines[5]))
  assert result.stderr == ""


def test_cli_dry_run_other_verbs():
  common = ["--name=n1", "--zone=europe-west4-a", "--dry_run"]
  assert _cli("delete", "--queued", "--yes", *common).stdout == (
      "gcloud compute tpus queued-resources delete n1-qr --zone=europe-west4-a --force --quiet\n")
  assert _cli("fetch", "--workdir=gs://bkt/x", *common).stdout == (
      "mkdir -p ./x\ngsutil -m rsync -r gs://bkt/x ./x\n")
  logs = _cli("logs", "--worker=all", "--no_follow", *common).stdout
  assert shlex.split(logs)[-1] == (
      '--command=tail -n 100 ~/rest_jax_logs/rest_jax.log | sed -u "s/^/[$(hostname)] /"')


@pytest.mark.parametrize("args, message", [
    (["create", "--name=n1", "--accelerator_type=v4-8"], "the following arguments are required: --zone"),
    (["create", "--name=n1", "--zone=us-central2-b", "--accelerator_type=v4-9"],
     "TpuConfig.accelerator_type='v4-9' is invalid"),
    (["run", "--name=n1", "--zone=us-central2-b", "--accelerator_type=v4-32",
      "--gin_file=wmt20_zh_en/rest.gin", "--workdir=/tmp/w"], "use gs://BUCKET/PATH"),
    (["all", "--name=n1", "--zone=us-central2-b", "--accelerator_type=v4-8",
      "--gin_file=no_such/file.gin", "--workdir=gs://bkt/w"], "['no_such/file.gin'] not found"),
    (["logs", "--name=n1", "--zone=us-central2-b", "--accelerator_type=v4-8", "--worker=1"],
     "worker='1' is invalid: expected 'all' or 0..0"),
])
def test_cli_rejects_bad_input_before_running_anything(args, message):
  result = _cli(*args, "--dry_run")
  assert result.returncode == 2 and result.stdout == ""
  assert message in result.stderr


def test_cli_warns_about_a_local_workdir():
  flags = ["--name=n1", "--zone=us-central2-b", "--accelerator_type=v4-8",
           "--gin_file=iwslt14_de_en/rest_g1.gin", "--workdir=runs/g1", "--dry_run"]
  result = _cli("run", *flags)
  assert result.returncode == 0 and "warning: workdir 'runs/g1' lives on the VM's disk" in \
      result.stderr
  result = _cli("all", "--spot", *flags)
  assert result.returncode == 0 and "which a preemption deletes" in result.stderr


def _script_module():
  spec = importlib.util.spec_from_file_location("tpu_vm", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_execute_stops_at_the_first_failure(tmp_path, capsys):
  execute = _script_module().execute
  marker = tmp_path / "ran"
  assert execute([["true"], ["sh", "-c", "exit 7"], ["touch", str(marker)]]) == 7
  err = capsys.readouterr().err
  assert "error: step 2/3 failed with exit code 7: sh -c 'exit 7'" in err
  assert "not run: 1 later step(s)" in err and not marker.exists()
  assert execute([["touch", str(marker)], ["no-such-program-xyz"]]) == 127
  assert "'no-such-program-xyz' not found on PATH" in capsys.readouterr().err
  assert not marker.exists()


# --- preemption: re-create and resume --------------------------------------------------------


@pytest.mark.parametrize("status, state, action", [
    (0, "READY", "done"),
    (75, "PREEMPTED", "recreate"), (255, "PREEMPTED", "recreate"), (255, "TERMINATED", "recreate"),
    (255, None, "recreate"), (1, "SUSPENDED", "recreate"), (255, "FAILED", "recreate"),
    (75, "READY", "rerun"), (75, "ACTIVE", "rerun"),
    (1, "READY", "fail"), (255, "UNKNOWN", "fail"),
])
def test_recovery_after_wait(status, state, action):
  assert tpu.recovery(status, state) == action


def test_cli_all_max_preemptions_dry_run_shows_the_recovery_commands():
  flags = ["--name=rest-wmt", "--zone=us-central2-b", "--accelerator_type=v4-32", "--queued",
           "--spot", "--gin_file=wmt20_zh_en/rest.gin", "--workdir=gs://bkt/wmt20"]
  result = _cli("all", "--dry_run", "--max_preemptions=3", *flags)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  cfg = TpuConfig(name="rest-wmt", zone="us-central2-b", accelerator_type="v4-32", queued=True,
                  spot=True, local_repo=REPO, gin_files=("wmt20_zh_en/rest.gin",),
                  workdir="gs://bkt/wmt20")
  first = [shlex.join(argv) for argv in tpu.all_commands(cfg, wait=True)]
  assert lines[:len(first)] == first
  rest = lines[len(first):]
  assert rest[0] == "# on a non-zero exit, up to 3 time(s): read the state"
  assert rest[1] == ("gcloud compute tpus queued-resources describe rest-wmt-qr "
                     "--zone=us-central2-b '--format=value(state.state)'")
  assert rest[2] == "# state SUSPENDING, SUSPENDED, FAILED or gone: recreate and resume the workdir"
  assert rest[3] == ("gcloud compute tpus queued-resources delete rest-wmt-qr "
                     "--zone=us-central2-b --force --quiet")
  assert rest[4:4 + len(first)] == first  # The same workdir: the run resumes from it.
  assert rest[4 + len(first)] == "# state ready and exit status 75 (SIGTERM): run again"
  assert rest[5 + len(first):] == [shlex.join(argv) for argv in tpu.rerun_commands(cfg)] + [
      "# any other exit status: stop with it"]
  bad = _cli("all", "--dry_run", "--max_preemptions=-1", *flags)
  assert bad.returncode == 2 and "max_preemptions=-1 is invalid" in bad.stderr


def test_supervise_recreates_a_preempted_vm_within_the_budget(capsys):
  supervise = _script_module().supervise
  cfg = _cfg(accelerator_type="v4-8", spot=True, gin_files=("a.gin",), workdir="gs://bkt/w")
  calls, statuses = [], []

  def run(commands):
    calls.append(commands)
    return statuses.pop(0)

  states = iter(["PREEMPTED", None, "READY"])
  statuses[:] = [75, 255, 75, 0]
  assert supervise(cfg, 3, run=run, state=lambda _: next(states)) == 0
  assert calls == [tpu.all_commands(cfg, wait=True), tpu.recreate_commands(cfg),
                   tpu.recreate_commands(cfg, delete=False), tpu.rerun_commands(cfg)]
  assert calls[1][0] == TPU_VM + ["delete", "rest-test", ZONE, "--quiet"]
  assert "state PREEMPTED: recreate (resume 1 of 3)" in capsys.readouterr().err

  calls.clear()
  statuses[:] = [75, 75]
  assert supervise(cfg, 1, run=run, state=lambda _: "PREEMPTED") == 75  # Budget spent.
  assert len(calls) == 2 and "after 1 resume(s)" in capsys.readouterr().err
  calls.clear()
  statuses[:] = [1]
  assert supervise(cfg, 5, run=run, state=lambda _: "READY") == 1  # A real failure: no retry.
  assert len(calls) == 1
