"""Command line: `python -m rest_jax.main --gin_file=... [--gin.X=V ...] --workdir=...`.

Parses the gin files and bindings (t5x style: `--gin.rest_loop.run.num_grow_steps=2` is the
binding `rest_loop.run.num_grow_steps=2`), writes the config into the workdir, runs (or resumes)
the experiment and writes the operative config when it ends.

A run writes only into its workdir (and the TFDS data folder, $TFDS_DATA_DIR or
~/tensorflow_datasets, which prepares the shipped corpora once). Libraries it drives also make
temporary files — TFDS stages dataset info in `tmp*tfds` folders it never removes, TensorFlow's
autograph writes generated modules — so the process's temporary folder is pointed at a folder of
its own under `<workdir>/tmp`, removed when the run ends (and, after a kill, by the next run).

Exit status: 0 when the run completed; `rest_jax.preemption.EXIT_CODE` (75) when SIGTERM stopped
it at a checkpointed step boundary (run the same command again to resume); 1 on an error (a
one-line message names the bad input).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from typing import Sequence

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments")


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """Turns `--gin.NAME=VALUE` into `--gin_bindings=NAME=VALUE`."""
  out = []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      out.append("--gin_bindings=" + arg[len("--gin."):])
    else:
      out.append(arg)
  return out


def _define_flags():
  from absl import flags
  flags.DEFINE_multi_string("gin_file", [], "Gin files, relative to experiments/ or a path.")
  flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings (or use --gin.NAME=VALUE).")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, grown data and results.")
  flags.DEFINE_multi_string("gin_search_paths", [EXPERIMENTS_DIR, "."],
                            "Where gin files and their includes are looked up.")
  flags.DEFINE_bool("verbose_libraries", False, "Keep orbax/TensorFlow INFO logs.")
  flags.DEFINE_bool("multiprocess", False, "Initialise jax.distributed: auto-detected on TPU "
                    "VMs, else from the flags below or REST_JAX_* variables (rest_jax.distributed).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (--multiprocess).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (--multiprocess).")
  flags.DEFINE_integer("process_id", None, "This process's index (--multiprocess).")
  return flags.FLAGS


class _QuietGinResourceProbe:
  """Drops gin's "Path not found" errors: it probes package resources before the search paths,
  so every `include` of a file found on a search path would log a false error."""

  def filter(self, record) -> bool:
    return not (record.pathname.endswith("resource_reader.py")
                and str(record.msg).startswith("Path not found"))


def parse_gin(gin_files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str], finalize: bool = True) -> None:
  """Parses gin files (looked up on `search_paths`) and bindings, with clear file errors."""
  import logging
  import gin
  from rest_jax import gin_setup  # noqa: F401  (registers the configurables)
  for path in search_paths:
    gin.add_config_file_search_path(path)
  if not gin_files:
    raise ValueError("No --gin_file given; e.g. --gin_file=ding_de_en/quickstart.gin")
  for f in gin_files:
    found = [p for p in [f] + [os.path.join(s, f) for s in search_paths] if os.path.exists(p)]
    if not found:
      raise FileNotFoundError(f"--gin_file={f!r} not found (looked in {list(search_paths)}).")
  quiet = _QuietGinResourceProbe()
  logging.getLogger().addFilter(quiet)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=finalize)
  finally:
    logging.getLogger().removeFilter(quiet)


def configure_logging(verbose: bool = False) -> None:
  """Library chatter (orbax, TensorFlow) at WARNING; rest_jax's own progress at INFO."""
  import logging
  from absl import logging as absl_logging
  if not verbose:
    absl_logging.set_verbosity(absl_logging.WARNING)
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
  package_logger = logging.getLogger("rest_jax")
  package_logger.setLevel(logging.INFO)
  package_logger.addHandler(handler)
  package_logger.propagate = False


def use_private_tempdir(workdir: str) -> str:
  """Makes `<workdir>/tmp/<host>-<pid>` this process's temporary folder (Python's tempfile and
  $TMPDIR for libraries and child processes) and removes it at exit; also removes the folders of
  earlier processes of this host that no longer run (killed runs). A cloud workdir gets a
  private folder in the system temporary folder instead, removed at exit as well."""
  from rest_jax import fileio
  host = socket.gethostname()
  if fileio.is_remote(workdir):
    path = tempfile.mkdtemp(prefix="rest_jax-")
  else:
    root = os.path.join(os.path.abspath(workdir), "tmp")
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
      owner, _, pid = name.rpartition("-")
      if owner == host and pid.isdigit() and not _is_running(int(pid)):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    path = os.path.join(root, f"{host}-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
  os.environ["TMPDIR"] = path
  tempfile.tempdir = path

  def remove():
    shutil.rmtree(path, ignore_errors=True)
    if not fileio.is_remote(workdir):
      try:
        os.rmdir(os.path.dirname(path))  # Only when no other process of the run uses it.
      except OSError:
        pass

  atexit.register(remove)
  return path


def check_local_workdir(workdir: str) -> None:
  """A local workdir must be a directory this process can write (or not exist yet); checked
  by writing a probe file, which also catches read-only mounts and root-owned folders."""
  from rest_jax import fileio
  if fileio.is_remote(workdir):
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} is a file; expected a directory (created when "
                     "missing).")
  if os.path.isdir(workdir):
    probe = os.path.join(workdir, f".write_probe-{socket.gethostname()}-{os.getpid()}")
    try:
      with open(probe, "wb"):
        pass
      os.remove(probe)
    except OSError as e:
      raise PermissionError(f"--workdir={workdir!r} is not writable ({e.strerror}); expected a "
                            "directory this user can write (checkpoints and results go "
                            "there).") from None


def _is_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def main(argv: Sequence[str]) -> None:
  import logging
  import gin
  from absl import flags as absl_flags
  from rest_jax import fileio, preemption, rest_loop
  flags = absl_flags.FLAGS
  configure_logging(flags.verbose_libraries)
  if len(argv) > 1:
    raise ValueError(f"Unexpected positional arguments: {argv[1:]}")
  if not flags.workdir:
    raise ValueError("--workdir is required (checkpoints, grown data and results go there).")
  check_local_workdir(flags.workdir)
  preemption.install_handler()  # Before jax.distributed, whose preemption service replaces it.
  use_private_tempdir(flags.workdir)
  if flags.multiprocess:
    from rest_jax import distributed
    distributed.initialize(flags.coordinator_address, flags.num_processes, flags.process_id)
  parse_gin(flags.gin_file, flags.gin_bindings, flags.gin_search_paths)
  fileio.makedirs(flags.workdir)
  config = gin.config_str()
  write_config = lambda: _write(os.path.join(flags.workdir, "config.gin"), config)
  rest_loop_run = gin.get_configurable("rest_loop.run")
  try:  # config.gin is written once the workdir has accepted this configuration.
    rest_loop_run(workdir=flags.workdir, on_start=write_config)
  except preemption.Preempted as e:
    logging.getLogger("rest_jax.main").warning(
        "Preempted: %s Exiting with status %d; run the same command to resume.", e,
        preemption.EXIT_CODE)
    sys.exit(preemption.EXIT_CODE)
  _write(os.path.join(flags.workdir, "operative_config.gin"), gin.operative_config_str())
  del rest_loop


def _write(path: str, text: str) -> None:
  import jax
  from rest_jax import fileio
  if jax.process_index() == 0:
    fileio.write_atomic(path, text.encode("utf-8"))


def run_cli(argv: Sequence[str] | None = None) -> None:
  from absl import app
  _define_flags()
  app.run(main, argv=rewrite_gin_args(sys.argv if argv is None else argv))


if __name__ == "__main__":
  run_cli()
