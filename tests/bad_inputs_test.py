"""Twenty-five bad inputs, each run through the real entry point (`rest_jax.main`, in this
process, flags parsed as on the command line; `rest_jax.evaluate_policy` for the TSV file).

Each row either stops with an error whose first line names the field and what is allowed,
before any training, sampling or evaluation, or takes its documented recovery; and nothing the
workdir already held is lost (rows that continue a finished run compare every file before and
after). The list and the exit codes are in README.md ("Bad input and exit codes").
"""

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import signal
import tempfile
from typing import Callable

import gin
import pytest
from absl import flags as absl_flags

from rest_jax import checkpointing, evaluate_policy, main, train

pytestmark = pytest.mark.slow

BASE = ["--gin_file=test/tiny_e2e.gin", "--gin.rest_loop.run.num_grow_steps=0",
        "--gin.bc/TrainPhaseConfig.max_steps=2", "--gin.bc/TrainPhaseConfig.eval_every=2"]


def _flags():
  if "workdir" not in absl_flags.FLAGS:
    main._define_flags()  # pylint: disable=protected-access
  return absl_flags.FLAGS


def _main_runner(monkeypatch):
  """`python -m rest_jax.main ARGS` in this process; the process-wide state main sets up (its
  temporary folder, the SIGTERM handler, the rest_jax logger) is put back by `monkeypatch`."""
  flags = _flags()
  package_logger = logging.getLogger("rest_jax")
  monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
  monkeypatch.setenv("TMPDIR", os.environ.get("TMPDIR", tempfile.gettempdir()))
  monkeypatch.setattr(package_logger, "handlers", list(package_logger.handlers))
  monkeypatch.setattr(package_logger, "propagate", package_logger.propagate)

  def run(*args):
    sigterm = signal.getsignal(signal.SIGTERM)
    flags.unparse_flags()
    flags(["rest_jax.main", *main.rewrite_gin_args(list(args))])
    gin.clear_config()
    try:
      return main.main(["rest_jax.main"])
    finally:
      gin.clear_config()
      flags.unparse_flags()
      signal.signal(signal.SIGTERM, sigterm)

  return run


@pytest.fixture
def run_main(monkeypatch):
  return _main_runner(monkeypatch)


def _snapshot(workdir):
  """{relative path: sha256} of every file in a workdir (its temporary folder aside)."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, workdir)
      if not rel.startswith("tmp" + os.sep):
        with open(path, "rb") as f:
          out[rel] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny BC-only run (through main), which some rows continue."""
  workdir = tmp_path_factory.mktemp("finished")
  with pytest.MonkeyPatch.context() as monkeypatch:
    _main_runner(monkeypatch)(*BASE, f"--workdir={workdir}")
  return workdir


@dataclasses.dataclass
class Row:
  name: str
  args: list  # Flags after BASE; "{w}" is the workdir, "{tmp}" the test's folder.
  error: type | None  # None: a documented recovery (the run completes).
  message: str  # A regex the error's first line (or, for a recovery, the log) must match.
  # "fresh" (empty), "finished" (a copy of a finished run), "file", or "read_only" (mode 0555;
  # for root, which ignores the mode, an existing sysfs folder).
  workdir: str = "fresh"
  setup: Callable | None = None  # setup(workdir, tmp) before the run.
  base: bool = True  # Prepend BASE.


def _garble_first_results_line(workdir, tmp):
  del tmp
  path = os.path.join(workdir, "results.jsonl")
  lines = open(path, encoding="utf-8").read().splitlines()
  with open(path, "w", encoding="utf-8") as f:
    f.write(lines[0][:30] + "\x00garbled\n" + "\n".join(lines[1:]) + "\n")


def _bad_tsv(workdir, tmp):
  del workdir
  with open(os.path.join(tmp, "news.tsv"), "w", encoding="utf-8") as f:
    f.write("Guten Morgen.\tGood morning.\nno tab on this line\n")


def _empty_dir(workdir, tmp):
  del workdir
  os.makedirs(os.path.join(tmp, "not_a_checkpoint"))


def _read_only(workdir, tmp):
  del tmp
  os.chmod(workdir, 0o555)


# Root writes into a mode-0555 folder; sysfs folders refuse new files to every user.
_ROOT_READ_ONLY_DIR = "/sys/kernel"


ROWS = [
    # Configuration values (gin bindings), refused before any data loads or compiles.
    Row("num_grow_steps", ["--gin.rest_loop.run.num_grow_steps=-1"], ValueError,
        r"run\.num_grow_steps=-1 is invalid: expected an integer >= 0"),
    Row("num_samples", ["--gin.GrowConfig.num_samples=0"], ValueError,
        r"num_samples=0 is invalid: expected a positive integer"),
    Row("temperature", ["--gin.GrowConfig.temperature=-1.0"], ValueError,
        r"temperature=-1\.0 is invalid: must be >= 0"),
    Row("falling thresholds",
        ["--gin.ImproveConfig.filter_schedule=('threshold:tau=0.5', 'threshold:tau=0.1')"],
        ValueError, r"Filter schedule must tighten .* has tau=0\.1"),
    Row("unknown loss", ["--gin.ImproveConfig.losses=('nope',)"], ValueError,
        r"Unknown loss 'nope'; valid losses: \[.*'bc'"),
    Row("unknown reward", ["--gin.REWARD='nope'"], ValueError,
        r"unknown reward 'nope'; valid rewards: \[.*'chrf'"),
    Row("mesh", ["--gin.MeshConfig.data=3"], ValueError,
        r"MeshConfig data\*fsdp\*model = 3 but there are 8 devices"),
    Row("unknown gin parameter", ["--gin.GrowConfig.no_such=1"], ValueError,
        r"Configurable 'GrowConfig' doesn't have a parameter named 'no_such'"),
    Row("test_splits string", ["--gin.DataConfig.test_splits='test'"], ValueError,
        r"DataConfig\.test_splits='test' is invalid: .*one-split tuple needs its comma"),
    Row("missing test split", ["--gin.DataConfig.test_splits=('test_news',)"], ValueError,
        r"task 'ding_de_en' has no split \['test_news'\]; its splits: \["),
    Row("bc_selection_metric", ["--gin.rest_loop.run.bc_selection_metric='accuracy'"],
        ValueError, r"run\.bc_selection_metric='accuracy' is invalid; allowed: \['mean_reward'"),
    Row("stop_after_phase", ["--gin.rest_loop.run.stop_after_phase='grow9'"], ValueError,
        r"run\.stop_after_phase='grow9' is not a phase of this run; phases: \['bc'\]"),
    Row("unknown task", ["--gin.TASK='no_such_task'"], ValueError, r"no_such_task"),
    Row("model preset", ["--gin.rest_loop.run.model_preset='huge'"], ValueError,
        r"Unknown model preset 'huge'; allowed: \["),
    Row("shipped policy", ["--gin.rest_loop.run.init_policy='pretrained=nope'"], ValueError,
        r"run\.init_policy='pretrained=nope': no shipped policy 'nope'; shipped policies: \["),
    # Command line and workdir.
    Row("gin file", ["--gin_file=no_such.gin", "--workdir={w}"], FileNotFoundError,
        r"--gin_file='no_such\.gin' not found", base=False),
    Row("no workdir", ["--gin_file=test/tiny_e2e.gin"], ValueError, r"--workdir is required",
        base=False),
    Row("workdir is a file", [], ValueError, r"--workdir='.*' is a file; expected a directory",
        workdir="file"),
    Row("read-only workdir", [], PermissionError, r"--workdir='.*' is not writable",
        workdir="read_only"),
    # Checkpoint paths.
    Row("init_policy path", ["--gin.rest_loop.run.init_policy='{tmp}/no/such/dir'"], ValueError,
        r"run\.init_policy='.*/no/such/dir': no such directory"),
    Row("init_policy not a checkpoint",
        ["--gin.rest_loop.run.init_policy='{tmp}/not_a_checkpoint'"], ValueError,
        r"run\.init_policy: .*not_a_checkpoint holds no checkpoint", setup=_empty_dir),
    # Continuing a workdir.
    Row("changed BC config", ["--gin.bc/TrainPhaseConfig.max_steps=3"],
        checkpointing.CheckpointError,
        r"were made with another BC configuration \(train: .*'max_steps': 2.* -> .*"
        r"'max_steps': 3", workdir="finished"),
    Row("garbled results line", [], None,
        r"results\.jsonl line 1 is not a valid results row", workdir="finished",
        setup=_garble_first_results_line),
    # Training.
    Row("NaN loss", ["--gin.bc/OptimizerConfig.learning_rate=1e30",
                     "--gin.bc/OptimizerConfig.warmup_steps=0",
                     "--gin.bc/TrainPhaseConfig.max_steps=12",
                     "--gin.bc/TrainPhaseConfig.eval_every=12",
                     "--gin.bc/TrainPhaseConfig.log_every=1"], train.NonFiniteLossError,
        r"bc: the training loss is (nan|inf) at step \d+; this state is not saved"),
    # A TSV line, through `python -m rest_jax.evaluate_policy` (one `error:` line, status 1).
    Row("TSV line", ["--policy={finished}", "--tsv={tmp}/news.tsv", "--output_dir={tmp}/eval"],
        SystemExit, r"error: --tsv: .*news\.tsv, line 2: ", setup=_bad_tsv, base=False),
]


def test_the_table_has_twenty_five_distinct_rows():
  assert len(ROWS) == 25 == len({row.name for row in ROWS})


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input(row, run_main, finished, tmp_path, capsys, caplog):
  workdir = str(tmp_path / "w")
  if row.workdir == "finished":
    shutil.copytree(finished, workdir)
  elif row.workdir == "file":
    with open(workdir, "w", encoding="utf-8") as f:
      f.write("not a workdir\n")
  elif row.workdir == "read_only" and os.geteuid() == 0:
    assert os.path.isdir(_ROOT_READ_ONLY_DIR), f"{_ROOT_READ_ONLY_DIR} is needed as root"
    workdir = _ROOT_READ_ONLY_DIR
  elif row.workdir == "read_only":
    os.makedirs(workdir)
    _read_only(workdir, str(tmp_path))
  else:
    os.makedirs(workdir)
  if row.setup is not None:
    row.setup(workdir, str(tmp_path))
  own_dir = os.path.isdir(workdir) and workdir != _ROOT_READ_ONLY_DIR
  before = _snapshot(workdir) if own_dir else None
  args = [a.format(w=workdir, tmp=tmp_path, finished=finished) for a in row.args]
  if row.name == "TSV line":
    assert evaluate_policy.main(args) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.search(row.message, line), line
    assert not os.path.exists(tmp_path / "eval" / "news.translations.tsv")
    return
  args = (BASE + [f"--workdir={workdir}"] if row.base else []) + args
  if row.error is None:  # A documented recovery: the run completes and says what it did.
    with caplog.at_level(logging.WARNING):
      run_main(*args)
    (warning,) = [r.getMessage() for r in caplog.records if re.search(row.message, r.getMessage())]
    assert "results.jsonl.rejected" in warning and "\n" not in warning
    assert os.path.exists(os.path.join(workdir, "results.jsonl.rejected"))
    after = _snapshot(workdir)
    assert set(before) <= set(after)  # Every file kept; the garbled line moved aside.
    return
  with pytest.raises(row.error) as raised:
    run_main(*args)
  first_line = str(raised.value).splitlines()[0]
  assert re.search(row.message, first_line), first_line
  if before is not None:
    os.chmod(workdir, 0o755)
    after = _snapshot(workdir)
    assert {k: v for k, v in after.items() if k in before} == before  # Nothing lost or changed.
    new = set(after) - set(before)
    assert not [p for p in new if p.startswith(("checkpoints", "grown", "results"))], new
