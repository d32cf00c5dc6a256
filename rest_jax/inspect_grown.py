"""Prints a Grow step's samples with their rewards and whether an Improve round's filter keeps them.

Before trusting an Improve round, look at what it trains on: does the reward rank a source's
samples sensibly, what does the threshold throw away, and do the kept samples look like reward
hacking (short, repetitive, runaway characters)?

    python -m rest_jax.inspect_grown --workdir=DIR --grow_step=1 [--round=0]
        [--source_ids=3,17] [--limit=20] [--filter=SPEC] [--original_data=keep|filter|drop]

The filter runs over the whole Grow step through `improve.filter_round`, the function the Improve
round itself calls, so per-source filters (percentile, top_k, cap, dedup) see every sample and
the KEPT marks are exactly the round's; only the printing is limited. Without --filter the
round's filter and `original_data` come from the workdir's gin config: `config.gin` (written when
a run starts, so it is the latest launch's) or else `operative_config.gin`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Sequence

import numpy as np

from rest_jax import fileio, filters, grown_data, improve

CONFIG_FILES = ("config.gin", "operative_config.gin")


def improve_config_from_workdir(workdir: str):
  """(ImproveConfig the workdir's run was configured with, the gin file it came from).

  Parses the file into gin's global config and clears it again afterwards.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from rest_jax import gin_setup  # pylint: disable=g-import-not-at-top
  gin_setup.register()
  found = [os.path.join(workdir, n) for n in CONFIG_FILES
           if fileio.exists(os.path.join(workdir, n))]
  if not found:
    raise FileNotFoundError(f"no {' or '.join(CONFIG_FILES)} in {workdir} to read the round's "
                            "filter from; pass --filter=SPEC")
  gin.clear_config()
  try:
    gin.parse_config(fileio.read_bytes(found[0]).decode("utf-8"), skip_unknown=True)
    try:
      value = gin.query_parameter("rest_loop.run.improve_config")
    except ValueError:  # Not bound: the run used ImproveConfig's defaults.
      return improve.ImproveConfig(), found[0]
    if isinstance(value, gin.config.ConfigurableReference):
      value = value.scoped_configurable_fn()
    return value, found[0]
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot read ImproveConfig from {found[0]} ({_one_line(e)}); pass "
                     "--filter=SPEC") from e
  finally:
    gin.clear_config()


def load_grown(workdir: str, grow_step: int) -> grown_data.GrownRecords:
  """Every record of a Grow step, with clear errors for a missing workdir or Grow step."""
  if not fileio.exists(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist")
  root = os.path.join(workdir, "grown")
  store = grown_data.GrowStore(root, grow_step)
  if not store.shard_files():
    steps = sorted(int(m.group(1)) for p in fileio.glob(os.path.join(root, "grow_*"))
                   if (m := re.search(r"grow_(\d+)$", p.rstrip("/"))))
    raise FileNotFoundError(f"no grown data for Grow step {grow_step} in {root} (Grow steps "
                            f"with shards: {steps or 'none'})")
  return store.read_all()


def choose_sources(records: grown_data.GrownRecords, source_ids: Sequence[int] | None,
                   limit: int) -> list[int]:
  """The requested sources, or the first `limit` sources (by id) that have policy samples."""
  if source_ids:
    unknown = sorted(set(source_ids) - set(records.source_id.tolist()))
    if unknown:
      raise ValueError(f"--source_ids {unknown} are not in this Grow step (ids range "
                       f"{records.source_id.min()}..{records.source_id.max()})")
    return list(source_ids)
  sampled = np.unique(records.source_id[~records.is_original])
  return sampled[:limit].tolist()


def _line(name: str, reward: float, kept: bool, text: str) -> str:
  return f"  {name:<10} reward {reward:.3f}  {'KEPT' if kept else 'dropped':<7}  {text}"


def format_source(records: grown_data.GrownRecords, mask: np.ndarray, source_id: int) -> str:
  """One source: its text, the reference record, then its samples by falling reward."""
  rows = np.flatnonzero(records.source_id == source_id)
  originals = [i for i in rows if records.is_original[i]]
  samples = sorted((i for i in rows if not records.is_original[i]),
                   key=lambda i: (-records.reward[i], records.sample_index[i]))
  lines = [f"source {source_id}: {records.source_text[rows[0]]}"]
  lines += [_line("reference", records.reward[i], mask[i], records.sample_text[i])
            for i in originals]
  lines += [_line(f"sample {records.sample_index[i]}", records.reward[i], mask[i],
                  records.sample_text[i]) for i in samples]
  return "\n".join(lines)


def inspect(workdir: str, grow_step: int, round_index: int = 0, filter_spec: str | None = None,
            original_data: str | None = None, source_ids: Sequence[int] | None = None,
            limit: int = 20) -> str:
  """The text `main` prints (see the module docstring)."""
  records = load_grown(workdir, grow_step)
  config, origin = _round_settings(workdir, round_index, filter_spec, original_data)
  filter_, original_data = config
  result = improve.filter_round(records, filter_, original_data)
  header = (f"Grow step {grow_step} of {workdir}, Improve round {round_index}: filter "
            f"{filter_.spec!r} (original_data={original_data!r}; {origin}) keeps "
            f"{result.num_kept} of {result.num_total} rows ({result.num_kept_samples} policy "
            f"samples, {result.num_kept_original} original pairs) from "
            f"{result.num_sources_kept} sources.")
  chosen = choose_sources(records, source_ids, limit)
  return "\n\n".join([header] + [format_source(records, result.mask, s) for s in chosen]) + "\n"


def _round_settings(workdir, round_index, filter_spec, original_data):
  """((filter, original_data), where they came from), flags first, then the workdir config."""
  config, path = None, None
  if filter_spec is None or original_data is None:
    try:
      config, path = improve_config_from_workdir(workdir)
    except (FileNotFoundError, ValueError):
      if filter_spec is None:
        raise
  if filter_spec is not None:
    try:
      filter_ = filters.to_filter(filter_spec)
    except ValueError as e:
      raise ValueError(f"bad --filter={filter_spec!r}: {_one_line(e)}") from e
    origin = "--filter"
  else:
    if not isinstance(round_index, int) or round_index < 0:
      raise ValueError(f"--round={round_index!r} is invalid: expected an integer >= 0")
    filter_ = config.filter_of(round_index)
    origin = f"round {round_index} of {os.path.basename(path)}"
  if original_data is None:
    original_data = config.original_data if config is not None else "keep"
  return (filter_, original_data), origin


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).split())


def _parse_ids(text: str) -> list[int]:
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m rest_jax.inspect_grown",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="The run's workdir.")
  parser.add_argument("--grow_step", type=int, required=True, help="Grow step (1-based).")
  parser.add_argument("--round", type=int, default=0, help="Improve round (0-based) whose "
                      "filter to apply; ignored with --filter.")
  parser.add_argument("--source_ids", type=_parse_ids, default=None,
                      help="Comma-separated source ids to print (default: the first --limit).")
  parser.add_argument("--limit", type=int, default=20, help="Sources to print.")
  parser.add_argument("--filter", default=None, help="A filter spec, e.g. 'threshold:tau=0.5' "
                      "(default: the round's filter from the workdir's config).")
  parser.add_argument("--original_data", choices=filters.ORIGINAL_DATA_OPTIONS, default=None,
                      help="How the human references are treated (default: from the config).")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.limit <= 0:
      raise ValueError(f"--limit={args.limit} is invalid: expected a positive integer")
    text = inspect(fileio.abspath(args.workdir), args.grow_step, args.round, args.filter,
                   args.original_data, args.source_ids, args.limit)
  except (FileNotFoundError, ValueError) as e:
    print(f"inspect_grown: error: {_one_line(e)}", file=sys.stderr)
    return 2
  sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
