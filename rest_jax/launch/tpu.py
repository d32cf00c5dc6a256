"""Cloud TPU VM command sequences for rest_jax, built as data.

Running an experiment on Cloud TPU is a short, fixed sequence of `gcloud` calls: create the VM
(directly, or as a queued resource for spot capacity), put the code on every worker, start the same
`python -m rest_jax.main` on every worker so that `jax.distributed` sees one job, then read logs,
fetch results and delete the VM. This module only *builds* those calls, as argv lists: no
subprocess, no network, no gcloud needed. The exact sequence is therefore unit-testable and
`scripts/tpu_vm.py --dry_run` can print it for copy-paste; the script is the thin shell that parses
flags and executes the lists.

Layout on every worker (each worker has its own disk, so these are per-worker files):

  ~/rest_jax                     the code (`TpuConfig.remote_dir`), installed with pip -e '.[tpu]'
  ~/rest_jax_logs/<run>.log      stdout+stderr of the run on that worker, appended on every resume
  ~/rest_jax_logs/<run>.pid      pid (and process group) of the detached run
  ~/rest_jax_logs/<run>.exit     its exit status, written when it ends

The run is started with `nohup setsid bash -c ...` and its output goes to the log file, so it keeps
going when the ssh connection that started it closes.

Preemption: `rest_jax.main` answers SIGTERM by checkpointing and exiting with
`PREEMPTED_EXIT_CODE` (75). `recovery()` decides, from that exit status and the VM's state, whether
a supervised run (`scripts/tpu_vm.py all --max_preemptions=N`) re-creates the VM or queued
resource and resumes the same workdir (`recreate_commands`), starts the run again on a VM that is
still up (`rerun_commands`), or stops.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import tempfile
from typing import Sequence

from rest_jax.preemption import EXIT_CODE as PREEMPTED_EXIT_CODE  # Imports no jax.

LIBTPU_FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
LOG_DIR = "~/rest_jax_logs"
SOURCES = ("local", "git")
# Per accelerator family: the runtime (TPU software version) to use with JAX when none is given.
DEFAULT_RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v6e": "v2-alpha-tpuv6e",
}
# Families whose accelerator-type suffix counts chips (v5e, v6e) rather than TensorCores.
_CHIP_COUNTED = ("v5litepod", "v6e")
_CHIP_COUNTED_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)
# Left out of the code upload: version control, virtual environments, caches, build metadata.
UPLOAD_EXCLUDES = (".git", ".ci-venv", ".venv", "venv", "__pycache__", "*.egg-info",
                   ".pytest_cache")
REMOTE_TARBALL = "~/rest_jax_src.tar.gz"

_RESOURCE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_ACCELERATOR = re.compile(r"^(" + "|".join(DEFAULT_RUNTIME_VERSIONS) + r")-([0-9]+)$")
_DURATION = re.compile(r"^([0-9]+[dhms])+$")
_SAFE_WORD = re.compile(r"^[A-Za-z0-9._/+=@:,-]+$")  # needs no shell quoting
_REMOTE_DIR = re.compile(r"^(~/|/)[A-Za-z0-9._/-]+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_./]*$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GCS_PATH = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?$")


def _invalid(field: str, value, allowed: str) -> ValueError:
  return ValueError(f"TpuConfig.{field}={value!r} is invalid: {allowed}.")


def _check(condition: bool, field: str, value, allowed: str) -> None:
  if not condition:
    raise _invalid(field, value, allowed)


def is_gcs(path: str) -> bool:
  return path.startswith("gs://")


@dataclasses.dataclass(frozen=True)
class TpuConfig:
  """One TPU VM (or pod slice), the code on it and the experiment it runs.

  Empty strings mean "not set": `runtime_version` then defaults by accelerator family,
  `queued_resource_id` to `<name>-qr`, `multiprocess` (None) to "yes on multi-host slices".
  """

  name: str
  zone: str
  accelerator_type: str = ""
  runtime_version: str = ""
  project: str = ""
  spot: bool = False
  preemptible: bool = False
  queued: bool = False
  queued_resource_id: str = ""
  valid_until_duration: str = ""
  network: str = ""
  service_account: str = ""
  # Code: upload the local checkout, or clone `git_url` at `git_ref` on every worker.
  source: str = "local"
  local_repo: str = "."
  git_url: str = ""
  git_ref: str = "HEAD"
  exclude: tuple[str, ...] = ()
  remote_dir: str = "~/rest_jax"
  python: str = "python3"
  # The experiment: `python -m rest_jax.main` arguments and environment.
  gin_files: tuple[str, ...] = ()
  gin_bindings: tuple[str, ...] = ()
  workdir: str = ""
  env: tuple[str, ...] = ()
  multiprocess: bool | None = None
  allow_local_workdir: bool = False
  run_name: str = "rest_jax"

  def __post_init__(self):
    for field in ("exclude", "gin_files", "gin_bindings", "env"):
      value = getattr(self, field)
      _check(not isinstance(value, str), field, value, "expected a sequence of strings")
      object.__setattr__(self, field, tuple(value))
    self._check_resource()
    self._check_code()
    self._check_experiment()

  def _check_resource(self):
    _check(bool(_RESOURCE_ID.match(self.name)), "name", self.name,
           "expected 1-63 lowercase letters, digits or '-', starting with a letter")
    _check(bool(_ZONE.match(self.zone)), "zone", self.zone,
           "expected a Cloud zone such as 'us-central2-b' or 'europe-west4-a'")
    if self.accelerator_type:
      family, _ = _parse_accelerator(self.accelerator_type)
      if not self.runtime_version:
        object.__setattr__(self, "runtime_version", DEFAULT_RUNTIME_VERSIONS[family])
    _check(not self.runtime_version or bool(_SAFE_WORD.match(self.runtime_version)),
           "runtime_version", self.runtime_version, "expected a TPU software version such as "
           f"{sorted(set(DEFAULT_RUNTIME_VERSIONS.values()))}")
    _check(not (self.spot and self.preemptible), "preemptible", self.preemptible,
           "choose one of spot and preemptible (spot is the newer, recommended model)")
    _check(not (self.queued and self.preemptible), "preemptible", self.preemptible,
           "queued resources take spot=True for preemptible capacity, not preemptible")
    if self.queued and not self.queued_resource_id:
      object.__setattr__(self, "queued_resource_id", f"{self.name}-qr")
    _check(not self.queued_resource_id or bool(_RESOURCE_ID.match(self.queued_resource_id)),
           "queued_resource_id", self.queued_resource_id,
           "expected 1-63 lowercase letters, digits or '-', starting with a letter")
    _check(not self.valid_until_duration or self.queued, "valid_until_duration",
           self.valid_until_duration, "only queued resources (queued=True) expire")
    _check(not self.valid_until_duration or bool(_DURATION.match(self.valid_until_duration)),
           "valid_until_duration", self.valid_until_duration,
           "expected a duration such as '6h', '1d' or '2h30m'")
    for field in ("project", "network", "service_account"):
      value = getattr(self, field)
      _check(not value or bool(_SAFE_WORD.match(value)), field, value,
             "expected a Cloud resource name without spaces")
    _check(not self.service_account or "@" in self.service_account, "service_account",
           self.service_account, "expected a service account e-mail (NAME@PROJECT.iam...)")

  def _check_code(self):
    _check(self.source in SOURCES, "source", self.source, f"allowed: {SOURCES}")
    _check(self.source != "git" or bool(self.git_url), "git_url", self.git_url,
           "required when source='git' (the URL every worker clones)")
    _check(not self.git_url or not any(c.isspace() for c in self.git_url), "git_url",
           self.git_url, "expected a URL without whitespace")
    _check(bool(re.match(r"^[A-Za-z0-9._/-]+$", self.git_ref)), "git_ref", self.git_ref,
           "expected a branch, tag or commit such as 'main', 'v0.1' or 'HEAD'")
    _check(bool(_REMOTE_DIR.match(self.remote_dir)) and ".." not in self.remote_dir,
           "remote_dir", self.remote_dir,
           "expected '~/DIR' or '/ABS/DIR' of letters, digits and '._/-'")
    _check(bool(re.match(r"^[A-Za-z0-9._/-]+$", self.python)), "python", self.python,
           "expected an interpreter name or path such as 'python3'")

  def _check_experiment(self):
    for gin_file in self.gin_files:
      _check(bool(gin_file) and not gin_file.startswith("-"), "gin_files", self.gin_files,
             "expected gin file paths such as 'iwslt14_de_en/rest_g1.gin'")
    for binding in self.gin_bindings:
      name = binding.split("=", 1)[0]
      _check("=" in binding and bool(_GIN_NAME.match(name)), "gin_bindings", binding,
             "expected NAME=VALUE such as 'rest_loop.run.num_grow_steps=2' (no '--gin.' prefix)")
    for pair in self.env:
      _check("=" in pair and bool(_ENV_KEY.match(pair.split("=", 1)[0])), "env", pair,
             "expected KEY=VALUE with KEY a shell variable name")
    if is_gcs(self.workdir):
      _check(bool(_GCS_PATH.match(self.workdir)), "workdir", self.workdir,
             "expected gs://BUCKET/PATH, BUCKET being 3-63 of a-z 0-9 '-_.'")
    else:
      _check("://" not in self.workdir, "workdir", self.workdir,
             "expected gs://BUCKET/PATH or a path on the workers")
      _check(not self.workdir.startswith("~"), "workdir", self.workdir,
             "'~' is not expanded inside the quoted command; use gs://BUCKET/PATH, an absolute "
             f"path, or a path relative to remote_dir={self.remote_dir!r}")
    _check(bool(_RUN_NAME.match(self.run_name)), "run_name", self.run_name,
           "expected letters, digits and '._-' (it names the log, pid and exit files)")
    if self.multiprocess is False and self.accelerator_type and self.num_hosts > 1:
      raise _invalid("multiprocess", False, f"{self.accelerator_type} has {self.num_hosts} "
                     "hosts; they must join one jax.distributed job (multiprocess=True)")

  @property
  def num_hosts(self) -> int:
    """Worker VMs in the slice (v4-8: 1, v4-32: 4, v5litepod-16: 4)."""
    _require(self, "accelerator_type", "counting the slice's hosts")
    family, count = _parse_accelerator(self.accelerator_type)
    if family in _CHIP_COUNTED:
      return 1 if count <= 8 else count // 4
    return count // 8

  @property
  def use_multiprocess(self) -> bool:
    return self.num_hosts > 1 if self.multiprocess is None else self.multiprocess


def _parse_accelerator(accelerator_type: str) -> tuple[str, int]:
  match = _ACCELERATOR.match(accelerator_type)
  _check(bool(match), "accelerator_type", accelerator_type,
         "expected FAMILY-SIZE with FAMILY in "
         f"{list(DEFAULT_RUNTIME_VERSIONS)}, e.g. 'v4-8', 'v4-32', 'v5litepod-16', 'v6e-8'")
  family, count = match.group(1), int(match.group(2))
  if family in _CHIP_COUNTED:
    _check(count in _CHIP_COUNTED_SIZES, "accelerator_type", accelerator_type,
           f"{family} sizes count chips: {list(_CHIP_COUNTED_SIZES)}")
  else:
    _check(count >= 8 and count % 8 == 0, "accelerator_type", accelerator_type,
           f"{family} sizes count TensorCores: a multiple of 8 (8 per host), e.g. {family}-8")
  return family, count


def _require(cfg: TpuConfig, field: str, purpose: str) -> None:
  if not getattr(cfg, field):
    raise _invalid(field, getattr(cfg, field), f"required for {purpose}")


def _gcloud(cfg: TpuConfig, group: str, verb: str, *args: str) -> list[str]:
  """`gcloud compute tpus GROUP VERB ARGS... --zone=Z [--project=P]`; flags may follow."""
  argv = ["gcloud", "compute", "tpus", group, verb, *args, f"--zone={cfg.zone}"]
  return argv + ([f"--project={cfg.project}"] if cfg.project else [])


def _ssh(cfg: TpuConfig, worker: str, command: str) -> list[str]:
  return _gcloud(cfg, "tpu-vm", "ssh", cfg.name) + [f"--worker={worker}",
                                                    f"--command={command}"]


def _run_file(cfg: TpuConfig, suffix: str) -> str:
  return f"{LOG_DIR}/{cfg.run_name}.{suffix}"


# ---------------------------------------------------------------------------------------------
# Verbs. Each returns the full argv sequence and raises ValueError before returning anything when
# the config lacks what the verb needs.


def create_commands(cfg: TpuConfig) -> list[list[str]]:
  """Creates the VM; with `queued`, requests a queued resource and waits until it is ACTIVE."""
  _require(cfg, "accelerator_type", "create")
  options = [f"--accelerator-type={cfg.accelerator_type}"]
  if cfg.queued:
    options = [f"--node-id={cfg.name}"] + options + [f"--runtime-version={cfg.runtime_version}"]
  else:
    options.append(f"--version={cfg.runtime_version}")
  options += ["--spot"] if cfg.spot else []
  options += ["--preemptible"] if cfg.preemptible else []
  if cfg.valid_until_duration:
    options.append(f"--valid-until-duration={cfg.valid_until_duration}")
  options += [f"--network={cfg.network}"] if cfg.network else []
  options += [f"--service-account={cfg.service_account}"] if cfg.service_account else []
  if not cfg.queued:
    return [_gcloud(cfg, "tpu-vm", "create", cfg.name) + options]
  return [_gcloud(cfg, "queued-resources", "create", cfg.queued_resource_id) + options,
          wait_until_active_command(cfg)]


def wait_until_active_command(cfg: TpuConfig, poll_seconds: int = 30) -> list[str]:
  """Polls the queued resource until ACTIVE (exit 0) or FAILED/SUSPENDED (exit 1)."""
  describe = _gcloud(cfg, "queued-resources", "describe", cfg.queued_resource_id) + [
      "--format=value(state.state)"]
  qr = cfg.queued_resource_id
  script = (f"while true; do state=$({shlex.join(describe)}) || exit 1; "
            f'echo "queued resource {qr}: $state"; '
            f'case "$state" in ACTIVE) exit 0;; FAILED|SUSPENDING|SUSPENDED) '
            f'echo "queued resource {qr} is $state; delete it and request again" >&2; exit 1;; '
            f"esac; sleep {poll_seconds}; done")
  return ["bash", "-c", script]


def local_tarball(cfg: TpuConfig) -> str:
  return os.path.join(tempfile.gettempdir(), f"rest_jax_src-{cfg.name}.tar.gz")


def setup_commands(cfg: TpuConfig) -> list[list[str]]:
  """Puts the code in `remote_dir` on every worker and pip-installs it with the TPU extra."""
  if cfg.source == "local":
    tarball = local_tarball(cfg)
    excludes = [f"--exclude={pattern}" for pattern in UPLOAD_EXCLUDES + cfg.exclude]
    unpack = (f"mkdir -p {cfg.remote_dir} && tar -xzf {REMOTE_TARBALL} -C {cfg.remote_dir} "
              f"&& rm -f {REMOTE_TARBALL}")
    code = [["tar", "-czf", tarball, *excludes, "-C", os.path.abspath(cfg.local_repo), "."],
            _gcloud(cfg, "tpu-vm", "scp", tarball, f"{cfg.name}:{REMOTE_TARBALL}") + [
                "--worker=all"],
            _ssh(cfg, "all", unpack)]
  else:
    clone = (f"(test -d {cfg.remote_dir}/.git || git clone --quiet "
             f"{shlex.quote(cfg.git_url)} {cfg.remote_dir}) && cd {cfg.remote_dir} && "
             f"git fetch --quiet origin {cfg.git_ref} && git checkout --quiet --detach FETCH_HEAD "
             f"&& git log -1 --oneline")
    code = [_ssh(cfg, "all", clone)]
  install = (f"cd {cfg.remote_dir} && {cfg.python} -m pip install -e '.[tpu]' "
             f"-f {LIBTPU_FIND_LINKS}")
  return code + [_ssh(cfg, "all", install)]


def main_argv(cfg: TpuConfig) -> list[str]:
  """The `python -m rest_jax.main ...` every worker runs (unbuffered, for live logs)."""
  argv = [cfg.python, "-u", "-m", "rest_jax.main"]
  argv += [f"--gin_file={gin_file}" for gin_file in cfg.gin_files]
  argv.append(f"--workdir={cfg.workdir}")
  argv += ["--multiprocess"] if cfg.use_multiprocess else []
  return argv + [f"--gin.{binding}" for binding in cfg.gin_bindings]


def remote_run_script(cfg: TpuConfig) -> str:
  """Shell run on each worker: refuse if this run is alive, else start it detached."""
  _require(cfg, "accelerator_type", "run (single- or multi-host decides --multiprocess)")
  _require(cfg, "gin_files", "run")
  _require(cfg, "workdir", "run (checkpoints, grown data and reports go there)")
  if not is_gcs(cfg.workdir) and cfg.num_hosts > 1 and not cfg.allow_local_workdir:
    raise _invalid("workdir", cfg.workdir, f"{cfg.accelerator_type} has {cfg.num_hosts} hosts "
                   "and each would write its own local copy, while orbax needs one shared "
                   "directory for multi-host checkpoints; use gs://BUCKET/PATH (or set "
                   "allow_local_workdir, --allow_local_workdir, to override)")
  log, pid, status = (_run_file(cfg, s) for s in ("log", "pid", "exit"))
  env = shlex.join(["env", *cfg.env]) + " " if cfg.env else ""
  # The wrapper survives SIGTERM (`stop`, a preemption notice) to record the run's exit status:
  # rest_jax.main checkpoints and exits with PREEMPTED_EXIT_CODE, which `wait` passes on.
  job = (f"trap 'echo \"=== {cfg.run_name} got SIGTERM ===\"' TERM; "
         f'echo "=== {cfg.run_name} started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) ==="; '
         f"{env}{shlex.join(main_argv(cfg))}; rc=$?; "
         f'echo "=== {cfg.run_name} exited with status $rc ==="; echo $rc > {status}')
  return (f"set -e; cd {cfg.remote_dir}; mkdir -p {LOG_DIR}; "
          f'if kill -0 "$(cat {pid} 2>/dev/null)" 2>/dev/null; then '
          f'echo "{cfg.run_name} is still running on $(hostname) (pid $(cat {pid})); '
          f'wait for it or stop it first" >&2; exit 1; fi; '
          f"rm -f {status}; nohup setsid bash -c {shlex.quote(job)} >> {log} 2>&1 < /dev/null & "
          f'echo $! > {pid}; echo "started {cfg.run_name} on $(hostname); log: {log}"')


def run_commands(cfg: TpuConfig) -> list[list[str]]:
  """Starts the same command on every worker, detached from the ssh session."""
  return [_ssh(cfg, "all", remote_run_script(cfg))]


def remote_wait_script(cfg: TpuConfig, poll_seconds: float = 60) -> str:
  log, pid, status = (_run_file(cfg, s) for s in ("log", "pid", "exit"))
  return (f'while kill -0 "$(cat {pid} 2>/dev/null)" 2>/dev/null; do sleep {poll_seconds}; done; '
          f"tail -n 20 {log} 2>/dev/null; "
          f'if [ -f {status} ]; then exit "$(cat {status})"; fi; '
          f'echo "{cfg.run_name}: no exit status in {status}: never started here, or killed" >&2; '
          f"exit 1")


def wait_commands(cfg: TpuConfig, poll_seconds: float = 60) -> list[list[str]]:
  """Blocks until the run on worker 0 (process 0) ends; exits with its status."""
  return [_ssh(cfg, "0", remote_wait_script(cfg, poll_seconds))]


def remote_stop_script(cfg: TpuConfig) -> str:
  pid = _run_file(cfg, "pid")
  return (f'if kill -0 "$(cat {pid} 2>/dev/null)" 2>/dev/null; then '
          f'kill -TERM -- "-$(cat {pid})" && echo "stopped {cfg.run_name} on $(hostname)"; '
          f'else echo "{cfg.run_name} is not running on $(hostname)"; fi')


def stop_commands(cfg: TpuConfig) -> list[list[str]]:
  """Terminates the run's process group on every worker (a later `run` resumes it)."""
  return [_ssh(cfg, "all", remote_stop_script(cfg))]


def _check_worker(cfg: TpuConfig, worker: str) -> None:
  if worker == "all":
    return
  limit = cfg.num_hosts if cfg.accelerator_type else None
  ok = worker.isdigit() and (limit is None or int(worker) < limit)
  allowed = f"0..{limit - 1}" if limit else "a worker index"
  if not ok:
    raise ValueError(f"worker={worker!r} is invalid: expected 'all' or {allowed}.")


def remote_logs_script(cfg: TpuConfig, worker: str = "0", lines: int = 100,
                       follow: bool = True) -> str:
  _check_worker(cfg, worker)
  if not (isinstance(lines, int) and lines > 0):
    raise ValueError(f"lines={lines!r} is invalid: expected a positive integer.")
  tail = f"tail -n {lines}{' -F' if follow else ''} {_run_file(cfg, 'log')}"
  return tail + (' | sed -u "s/^/[$(hostname)] /"' if worker == "all" else "")


def logs_commands(cfg: TpuConfig, worker: str = "0", lines: int = 100,
                  follow: bool = True) -> list[list[str]]:
  """Streams the run's log of one worker (default 0) or all, prefixed with the host name."""
  return [_ssh(cfg, worker, remote_logs_script(cfg, worker, lines, follow))]


def fetch_commands(cfg: TpuConfig, dest_dir: str = ".") -> list[list[str]]:
  """Copies the workdir to `dest_dir/<basename of workdir>` (gsutil rsync, or scp from worker 0)."""
  _require(cfg, "workdir", "fetch")
  target = os.path.join(dest_dir, os.path.basename(cfg.workdir.rstrip("/")))
  if is_gcs(cfg.workdir):
    return [["mkdir", "-p", target], ["gsutil", "-m", "rsync", "-r", cfg.workdir, target]]
  remote = cfg.workdir if cfg.workdir.startswith("/") else f"{cfg.remote_dir}/{cfg.workdir}"
  return [["mkdir", "-p", dest_dir],
          _gcloud(cfg, "tpu-vm", "scp", f"{cfg.name}:{remote}", dest_dir) + [
              "--recurse", "--worker=0"]]


def delete_commands(cfg: TpuConfig, yes: bool = False) -> list[list[str]]:
  """Deletes the VM; a queued resource is deleted with --force, which deletes its VM too."""
  quiet = ["--quiet"] if yes else []
  if cfg.queued:
    return [_gcloud(cfg, "queued-resources", "delete", cfg.queued_resource_id) + [
        "--force"] + quiet]
  return [_gcloud(cfg, "tpu-vm", "delete", cfg.name) + quiet]


def status_commands(cfg: TpuConfig) -> list[list[str]]:
  if cfg.queued:
    return [_gcloud(cfg, "queued-resources", "describe", cfg.queued_resource_id)]
  return [_gcloud(cfg, "tpu-vm", "describe", cfg.name)]


def all_commands(cfg: TpuConfig, wait: bool = False) -> list[list[str]]:
  """create -> setup -> run (-> wait); every step is validated before any is returned."""
  return (create_commands(cfg) + setup_commands(cfg) + run_commands(cfg)
          + (wait_commands(cfg) if wait else []))


# ---------------------------------------------------------------------------------------------
# Resuming after preemption: what to do when `wait` ends with a non-zero status.

# TPU VM states after which the VM cannot run again (it is deleted and created anew), and the
# queued-resource states of a request whose VM was taken back or never came.
GONE_VM_STATES = ("PREEMPTED", "TERMINATED", "STOPPED", "STOPPING")
GONE_QUEUED_STATES = ("SUSPENDING", "SUSPENDED", "FAILED")
RECOVERIES = ("done", "rerun", "recreate", "fail")


def state_command(cfg: TpuConfig) -> list[str]:
  """Prints just the VM's state (READY, PREEMPTED, ...) or the queued resource's (ACTIVE,
  SUSPENDED, ...); fails when it does not exist."""
  if cfg.queued:
    return _gcloud(cfg, "queued-resources", "describe", cfg.queued_resource_id) + [
        "--format=value(state.state)"]
  return _gcloud(cfg, "tpu-vm", "describe", cfg.name) + ["--format=value(state)"]


def recovery(exit_status: int, state: str | None) -> str:
  """What a supervised run does after `wait` returned `exit_status` and the state command
  printed `state` (None: the VM or queued resource no longer exists).

  'done': the run finished. 'recreate': the VM was preempted (or deleted) — delete what is left,
  create, set up and run again on the same workdir. 'rerun': the VM is fine and the run stopped
  on SIGTERM (status PREEMPTED_EXIT_CODE, e.g. a maintenance event) — start it again there.
  'fail': the run itself failed; retrying would fail the same way.
  """
  if exit_status == 0:
    return "done"
  if state is None or state in GONE_VM_STATES + GONE_QUEUED_STATES:
    return "recreate"
  if exit_status == PREEMPTED_EXIT_CODE:
    return "rerun"
  return "fail"


def rerun_commands(cfg: TpuConfig) -> list[list[str]]:
  return run_commands(cfg) + wait_commands(cfg)


def recreate_commands(cfg: TpuConfig, delete: bool = True) -> list[list[str]]:
  """Deletes the preempted VM (or queued resource; `delete=False` when it is already gone),
  then create, setup, run and wait again: the run resumes from the checkpoints in its workdir."""
  return (delete_commands(cfg, yes=True) if delete else []) + all_commands(cfg, wait=True)


def supervised_plan(cfg: TpuConfig, max_preemptions: int) -> list[list[str]]:
  """The commands of `all --max_preemptions=N`, for --dry_run: the first attempt, then each
  recovery sequence under a comment saying when it runs (the state command decides)."""
  if isinstance(max_preemptions, bool) or not isinstance(max_preemptions, int) or \
      max_preemptions < 0:
    raise ValueError(f"max_preemptions={max_preemptions!r} is invalid: expected an integer >= 0 "
                     "(how many times a preempted run is resumed).")
  gone = ", ".join(GONE_QUEUED_STATES if cfg.queued else GONE_VM_STATES)
  return (all_commands(cfg, wait=True)
          + [["#", f"on a non-zero exit, up to {max_preemptions} time(s): read the state"],
             state_command(cfg),
             ["#", f"state {gone} or gone: recreate and resume the workdir"]]
          + recreate_commands(cfg)
          + [["#", f"state ready and exit status {PREEMPTED_EXIT_CODE} (SIGTERM): run again"]]
          + rerun_commands(cfg)
          + [["#", "any other exit status: stop with it"]])


# ---------------------------------------------------------------------------------------------
# Checks that look beyond the config itself (the local checkout) and advice that is not an error.


def missing_gin_files(cfg: TpuConfig) -> list[str]:
  """Gin files found neither under <local_repo>/experiments/ nor <local_repo>/."""
  roots = [os.path.join(cfg.local_repo, "experiments"), cfg.local_repo]
  return [f for f in cfg.gin_files
          if not any(os.path.isfile(os.path.join(root, f)) for root in roots)]


def workdir_warnings(cfg: TpuConfig) -> list[str]:
  if not cfg.workdir or is_gcs(cfg.workdir) or not cfg.accelerator_type:
    return []
  if cfg.num_hosts > 1:
    return [f"workdir {cfg.workdir!r} is local on {cfg.num_hosts} hosts: each worker writes its "
            "own copy, only process 0 writes reports and multi-host orbax checkpoints will not "
            "restore; use gs://BUCKET/PATH."]
  if cfg.spot or cfg.preemptible:
    return [f"workdir {cfg.workdir!r} is on the VM's disk, which a preemption deletes: the run "
            "cannot resume; use gs://BUCKET/PATH."]
  return [f"workdir {cfg.workdir!r} lives on the VM's disk: fetch it before deleting the VM, or "
          "use gs://BUCKET/PATH."]


def format_commands(commands: Sequence[Sequence[str]]) -> str:
  """One shell-quoted command per line, ready to paste into a shell; ["#", text] is a comment."""
  return "".join((" ".join(argv) if argv[0] == "#" else shlex.join(argv)) + "\n"
                 for argv in commands)
