r"""Create Cloud TPU VMs, install rest_jax on every worker, run experiments, fetch results.

A thin shell over rest_jax.launch.tpu, which builds the `gcloud compute tpus ...` command
sequences as data; this script parses flags, prints (--dry_run) or executes them one by one with
their output streamed, and stops at the first failure. Needs only Python and the Google Cloud CLI
(gcloud, and gsutil to fetch gs:// workdirs) on this machine: no jax. See docs/tpu.md.

  python scripts/tpu_vm.py all --name=rest-iwslt --zone=us-central2-b --accelerator_type=v4-8 \
      --gin_file=iwslt14_de_en/rest_g1.gin --workdir=gs://BUCKET/iwslt_g1 \
      --env=REST_JAX_TSV_DIR=gs://BUCKET/data --env=REST_JAX_MT_VOCAB=gs://BUCKET/spm32k.model
  python scripts/tpu_vm.py logs   --name=rest-iwslt --zone=us-central2-b
  python scripts/tpu_vm.py fetch  --name=rest-iwslt --zone=us-central2-b --workdir=gs://BUCKET/iwslt_g1
  python scripts/tpu_vm.py delete --name=rest-iwslt --zone=us-central2-b

Verbs: create setup run logs wait stop fetch status delete all. Every verb takes --dry_run.
`all --max_preemptions=N` waits for the run and, when a spot VM or queued resource is preempted,
deletes and re-creates it and resumes the same workdir, at most N times (docs/tpu.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from rest_jax.launch import tpu  # noqa: E402  (after the path set-up above)

VERBS = ("create", "setup", "run", "logs", "wait", "stop", "fetch", "status", "delete", "all")


def _parents() -> dict[str, argparse.ArgumentParser]:
  """Flag groups shared between verbs (argparse parents)."""
  def group():
    return argparse.ArgumentParser(add_help=False)
  common, create, remote, code, job, experiment = (group() for _ in range(6))
  common.add_argument("--name", required=True, help="TPU VM (node) name")
  common.add_argument("--zone", required=True, help="e.g. us-central2-b")
  common.add_argument("--accelerator_type", default="", help="e.g. v4-8, v4-32, v5litepod-16")
  common.add_argument("--project", default="", help="Cloud project (default: gcloud config)")
  common.add_argument("--queued", action="store_true",
                      help="the VM is (to be) a queued resource (queued-resources create)")
  common.add_argument("--queued_resource_id", default="", help="default: <name>-qr")
  common.add_argument("--dry_run", action="store_true",
                      help="print the commands, one per line, and run nothing")
  create.add_argument("--runtime_version", default="",
                      help="TPU software version (default by family, e.g. tpu-ubuntu2204-base)")
  create.add_argument("--spot", action="store_true", help="Spot capacity (preemptible, cheaper)")
  create.add_argument("--preemptible", action="store_true", help="legacy preemptible TPU")
  create.add_argument("--valid_until_duration", default="",
                      help="queued request expires if not filled within this, e.g. 6h")
  create.add_argument("--network", default="")
  create.add_argument("--service_account", default="")
  remote.add_argument("--remote_dir", default="~/rest_jax", help="code directory on the workers")
  remote.add_argument("--python", default="python3", help="interpreter on the workers")
  code.add_argument("--source", default="local", choices=tpu.SOURCES,
                    help="upload this checkout, or git clone --git_url on every worker")
  code.add_argument("--local_repo", default=REPO_ROOT, help="checkout to upload")
  code.add_argument("--exclude", action="append", default=[],
                    help="extra tar --exclude pattern for the upload (repeatable)")
  code.add_argument("--git_url", default="")
  code.add_argument("--git_ref", default="HEAD", help="branch, tag or commit to check out")
  job.add_argument("--run_name", default="rest_jax",
                   help="names ~/rest_jax_logs/<run_name>.{log,pid,exit} on the workers")
  experiment.add_argument("--gin_file", dest="gin_files", action="append", default=[],
                          help="gin file, relative to experiments/ (repeatable)")
  experiment.add_argument("--gin", dest="gin_bindings", action="append", default=[],
                          help="binding NAME=VALUE, passed as --gin.NAME=VALUE (repeatable)")
  experiment.add_argument("--workdir", default="", help="gs://BUCKET/PATH (recommended)")
  experiment.add_argument("--env", action="append", default=[],
                          help="KEY=VALUE set for the run on every worker (repeatable)")
  experiment.add_argument("--multiprocess", dest="multiprocess", action="store_const",
                          const=True, default=None,
                          help="force jax.distributed (default: on for multi-host slices)")
  experiment.add_argument("--no_multiprocess", dest="multiprocess", action="store_const",
                          const=False, help="single-host only")
  experiment.add_argument("--allow_local_workdir", action="store_true",
                          help="allow a non-gs:// workdir on a multi-host slice")
  return dict(common=common, create=create, remote=remote, code=code, job=job,
              experiment=experiment)


def build_parser() -> argparse.ArgumentParser:
  p = _parents()
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
  groups = dict(
      create=(["common", "create"], "create the TPU VM (or queued resource)"),
      setup=(["common", "remote", "code"], "put the code on every worker, pip install it"),
      run=(["common", "remote", "job", "experiment"], "start the experiment on every worker"),
      logs=(["common", "job"], "stream a worker's log"),
      wait=(["common", "job"], "block until the run ends; exit with its status"),
      stop=(["common", "job"], "terminate the run on every worker"),
      fetch=(["common", "remote"], "copy the workdir here"),
      status=(["common"], "describe the VM / queued resource"),
      delete=(["common"], "delete the VM (and its queued resource)"),
      all=(["common", "create", "remote", "code", "job", "experiment"],
           "create, setup, run (and --wait)"),
  )
  sub = {}
  for verb, (names, help_text) in groups.items():
    sub[verb] = verbs.add_parser(verb, parents=[p[n] for n in names], help=help_text)
  sub["logs"].add_argument("--worker", default="0", help="worker index or 'all'")
  sub["logs"].add_argument("--lines", type=int, default=100)
  sub["logs"].add_argument("--no_follow", action="store_true", help="print and exit")
  sub["fetch"].add_argument("--workdir", required=True)
  sub["fetch"].add_argument("--dest_dir", default=".",
                            help="results land in DEST_DIR/<basename of workdir>")
  sub["delete"].add_argument("--yes", action="store_true", help="do not ask for confirmation")
  sub["all"].add_argument("--wait", action="store_true", help="wait for the run to end")
  sub["all"].add_argument("--max_preemptions", type=int, default=0,
                          help="resume a preempted run up to N times: re-create the VM (or "
                          "queued resource) and run again on the same workdir; implies --wait")
  return parser


def config_from_args(args: argparse.Namespace) -> tpu.TpuConfig:
  fields = {f.name for f in dataclasses.fields(tpu.TpuConfig)}
  return tpu.TpuConfig(**{k: v for k, v in vars(args).items() if k in fields})


def plan(args: argparse.Namespace) -> tuple[list[list[str]], list[str]]:
  """(commands, warnings) for the parsed flags; ValueError on any invalid input."""
  cfg = config_from_args(args)
  builders = dict(
      create=lambda: tpu.create_commands(cfg),
      setup=lambda: tpu.setup_commands(cfg),
      run=lambda: tpu.run_commands(cfg),
      logs=lambda: tpu.logs_commands(cfg, args.worker, args.lines, not args.no_follow),
      wait=lambda: tpu.wait_commands(cfg),
      stop=lambda: tpu.stop_commands(cfg),
      fetch=lambda: tpu.fetch_commands(cfg, args.dest_dir),
      status=lambda: tpu.status_commands(cfg),
      delete=lambda: tpu.delete_commands(cfg, args.yes),
      all=lambda: (tpu.supervised_plan(cfg, args.max_preemptions) if args.max_preemptions
                   else tpu.all_commands(cfg, args.wait)),
  )
  commands = builders[args.verb]()
  warnings = tpu.workdir_warnings(cfg) if args.verb in ("run", "all") else []
  missing = tpu.missing_gin_files(cfg) if args.verb in ("run", "all") else []
  if missing and args.verb == "all" and cfg.source == "local":
    raise ValueError(f"--gin_file {missing} not found under {cfg.local_repo}/experiments/ "
                     "(the checkout that would be uploaded).")
  if missing:
    warnings.append(f"--gin_file {missing} not found in the local checkout {cfg.local_repo}; "
                    "the run fails unless the workers' code has them.")
  return commands, warnings


def execute(commands: list[list[str]]) -> int:
  """Runs the commands in order, output streamed; stops at the first failure."""
  for program in sorted({argv[0] for argv in commands}):
    if shutil.which(program) is None:
      hint = " (install the Google Cloud CLI)" if program in ("gcloud", "gsutil") else ""
      print(f"error: {program!r} not found on PATH{hint}; nothing was run.", file=sys.stderr)
      return 127
  for i, argv in enumerate(commands, 1):
    print(f"[{i}/{len(commands)}] {shlex.join(argv)}", file=sys.stderr, flush=True)
    try:
      returncode = subprocess.run(argv, check=False).returncode
    except KeyboardInterrupt:
      print(f"\ninterrupted during step {i}/{len(commands)}.", file=sys.stderr)
      return 130
    if returncode != 0:
      print(f"error: step {i}/{len(commands)} failed with exit code {returncode}: "
            f"{shlex.join(argv)}", file=sys.stderr)
      if i < len(commands):
        print(f"not run: {len(commands) - i} later step(s).", file=sys.stderr)
      return returncode
  return 0


def read_state(cfg: tpu.TpuConfig) -> str | None:
  """The VM's (or queued resource's) state; None when it does not exist; 'UNKNOWN' when gcloud
  fails otherwise (then nothing is re-created)."""
  result = subprocess.run(tpu.state_command(cfg), capture_output=True, text=True, check=False)
  if result.returncode == 0:
    return result.stdout.strip()
  return None if "NOT_FOUND" in result.stderr else "UNKNOWN"


def supervise(cfg: tpu.TpuConfig, max_preemptions: int, run=execute, state=read_state) -> int:
  """create, setup, run, wait; after a preemption, re-create (or re-run) and wait again, at most
  `max_preemptions` times. Returns the last exit status."""
  returncode = run(tpu.all_commands(cfg, wait=True))
  for attempt in range(1, max_preemptions + 1):
    current = state(cfg) if returncode else ""
    action = tpu.recovery(returncode, current)
    if action in ("done", "fail"):
      return returncode
    print(f"run ended with status {returncode}, state {current or 'gone'}: {action} "
          f"(resume {attempt} of {max_preemptions})", file=sys.stderr, flush=True)
    returncode = run(tpu.recreate_commands(cfg, delete=current is not None)
                     if action == "recreate" else tpu.rerun_commands(cfg))
  if returncode:
    print(f"error: status {returncode} after {max_preemptions} resume(s); the workdir keeps the "
          "checkpoints: run the same command again to go on.", file=sys.stderr)
  return returncode


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    commands, warnings = plan(args)
  except ValueError as e:
    print(f"tpu_vm.py {args.verb}: error: {e}", file=sys.stderr)
    return 2
  for warning in warnings:
    print(f"warning: {warning}", file=sys.stderr)
  if args.dry_run:
    sys.stdout.write(tpu.format_commands(commands))
    return 0
  if args.verb == "all" and args.max_preemptions:
    return supervise(config_from_args(args), args.max_preemptions)
  return execute(commands)


if __name__ == "__main__":
  sys.exit(main())
