r"""Scores a saved policy on any `source<TAB>reference` files.

  python -m rest_jax.evaluate_policy --policy=/tmp/rest_quickstart --tsv=news.tsv \
      --tsv=more.tsv.gz --output_dir=/tmp/eval [--reward=chrf] [--decode=beam --beam_size=4]

The ReST loop measures its policies only on its task's validation and test splits, while it
runs. Comparing a finished policy with another system, or checking it on new text, needs the
same numbers on any file, computed the same way: this command decodes with the loop's
`evaluate.Evaluator` and summarises with `text_metrics.summarize_translations` (mean reward
0-100, sacrebleu BLEU and chrF, length ratio, distinct-n and whatever else that function
reports), so its numbers and the loop's results tables can be compared.

`--policy` is a ReST workdir, a checkpoint directory (a `Checkpointer` root: its latest step, or
`--checkpoint_step`) or one step directory of it. In a workdir `--which` picks the checkpoint:
`best` (checkpoints_best/: the best policy of the last training phase, which after a finished
run is the final policy), `bc` (checkpoints_bc/) or `latest` (the newest of checkpoints/: the
last finished phase's policy or a mid-phase training state); the default, `auto`, takes the
first of best, bc, latest that holds a checkpoint. The model config, the task whose vocabulary
tokenises the text (`--vocabulary` overrides it) and the default decode length come from the
checkpoint's fingerprint meta, which the loop writes, so nothing about the run is repeated here.

Every input is checked before TensorFlow is imported or anything compiles: the flags, the
output directory, the TSV files (strictly: a malformed line is an error naming file and line),
the reward name and the checkpoint's meta. Sources longer than the model supports are truncated
(EOS kept) and counted. Per file, with `<stem>` its name without `.gz` and `.tsv`, it writes
atomically

  <output_dir>/<stem>.translations.tsv  source, reference, hypothesis, reward (0-1); one line
                                        per pair, in the file's order
  <output_dir>/<stem>.metrics.json      the summary ("metrics"), the policy and the settings

and prints one markdown table with a row per file. One process (any number of local devices).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, NamedTuple, Sequence

import numpy as np

from rest_jax import checkpointing, evaluate, fileio
from rest_jax.data import tsv as tsv_lib
from rest_jax.rewards import registry as reward_registry

WHICH = ("auto", "best", "bc", "latest")
WORKDIR_CHECKPOINTS = {"best": "checkpoints_best", "bc": "checkpoints_bc",
                       "latest": "checkpoints"}
POLICY_FORMS = ("a ReST workdir (with checkpoints_best/, checkpoints_bc/ or checkpoints/), a "
                "checkpoint directory (<dir>/<step>/) or a step directory")
METRIC_COLUMNS = (("mean_reward", "reward", 2), ("bleu", "BLEU", 2), ("chrf", "chrF", 2),
                  ("length_ratio", "length ratio", 3), ("distinct_1", "distinct-1", 3),
                  ("distinct_2", "distinct-2", 3))
DEFAULT_MAX_DECODE_LEN = evaluate.EvalConfig.max_decode_len  # When the meta records no lengths.


class PolicyCheckpoint(NamedTuple):
  directory: str  # A Checkpointer root.
  step: int
  which: str  # "best", "bc" or "latest" (chosen in a workdir), or "checkpoint" (given directly).
  meta: dict[str, Any]

  @property
  def path(self) -> str:
    return f"{self.directory}/{self.step}"


class Pair(NamedTuple):
  """One example, with the fields `evaluate.Evaluator` reads."""
  source: str
  reference: str
  inputs: np.ndarray  # Source token ids, EOS-terminated.


# ------------------------------------------------------------------------------------- flags
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m rest_jax.evaluate_policy",
                              description="Scores a saved policy on source<TAB>reference files.")
  p.add_argument("--policy", required=True, help=f"{POLICY_FORMS}")
  p.add_argument("--which", default="auto", help=f"in a workdir, one of {WHICH}")
  p.add_argument("--checkpoint_step", type=int, default=None,
                 help="step of the checkpoint directory (default: its latest)")
  p.add_argument("--tsv", action="append", required=True,
                 help="source<TAB>reference file, plain or .gz; repeat for several")
  p.add_argument("--output_dir", required=True)
  p.add_argument("--reward", default="chrf",
                 help="reward spec, e.g. chrf, bleu, learned:pretrained=ding_de_en")
  p.add_argument("--decode", default="greedy", help=f"one of {evaluate.DECODE_METHODS}")
  p.add_argument("--beam_size", type=int, default=4)
  p.add_argument("--length_penalty", type=float, default=0.6, help="beam search only")
  p.add_argument("--batch_size", type=int, default=64, help="sources per decoding batch")
  p.add_argument("--max_examples", type=int, default=None, help="first pairs of each file")
  p.add_argument("--max_decode_len", type=int, default=None,
                 help="default: the run's target length from the checkpoint's fingerprint")
  p.add_argument("--vocabulary", default=None,
                 help="vocabulary spec (ding, byte, a .model path); default: the run's task's")
  p.add_argument("--source_prefix", default=None,
                 help="text put before every source (the run's DataConfig.source_prefix, e.g. "
                      "'translate German to English: '); required when the run had one")
  return p.parse_args(argv)


def check_source_prefix(fingerprint: dict[str, Any], prefix: str | None) -> str:
  """The prefix to put before sources: --source_prefix, checked against the one the run used
  (its task name ends in '.prefix_<sha256[:8]>' of it)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  match = re.search(r"\.prefix_([0-9a-f]{8})$", fingerprint.get("task") or "")
  if match is None:
    return prefix or ""
  if prefix is None:
    raise ValueError(f"--source_prefix is required: the policy was trained with a prefix "
                     f"before every source (task {fingerprint['task']!r}); pass the run's "
                     "DataConfig.source_prefix.")
  if hashlib.sha256(prefix.encode("utf-8")).hexdigest()[:8] != match.group(1):
    raise ValueError(f"--source_prefix={prefix!r} is not the prefix the policy was trained "
                     f"with (task {fingerprint['task']!r}).")
  return prefix


def _check_choice(flag: str, value: str, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f"--{flag}={value!r} is invalid; allowed: {', '.join(allowed)}")


def check_flags(args: argparse.Namespace) -> None:
  """Flag values, the output directory and the reward name: cheap checks, before any file."""
  _check_choice("which", args.which, WHICH)
  _check_choice("decode", args.decode, evaluate.DECODE_METHODS)
  for flag in ("beam_size", "batch_size", "max_examples", "max_decode_len"):
    value = getattr(args, flag)
    if value is not None and value <= 0:
      raise ValueError(f"--{flag}={value} is invalid; allowed: a positive integer")
  if args.checkpoint_step is not None and args.checkpoint_step < 0:
    raise ValueError(f"--checkpoint_step={args.checkpoint_step} is invalid; allowed: an "
                     "integer >= 0")
  out = args.output_dir
  if not fileio.is_remote(out) and os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--output_dir={out!r} is an existing file; allowed: a directory (created "
                     "if missing)")
  try:
    name, _ = reward_registry.parse_spec(args.reward)
  except ValueError as e:
    raise ValueError(f"--reward: {e}") from e
  _check_choice("reward", name, reward_registry.list_rewards())


# --------------------------------------------------------------------------------- TSV files
def output_stem(path: str) -> str:
  """'data/news.tsv.gz' -> 'news'."""
  name = os.path.basename(path.rstrip("/"))
  for suffix in (".gz", ".tsv"):
    name = name[:-len(suffix)] if name.endswith(suffix) else name
  return name


def read_tsv_files(paths: Sequence[str], max_examples: int | None
                   ) -> list[list[tuple[str, str]]]:
  """The (source, reference) pairs of each file; the first problem is a ValueError."""
  stems = [output_stem(p) for p in paths]
  for i, stem in enumerate(stems):
    if stem in stems[:i]:
      raise ValueError(f"--tsv={paths[stems.index(stem)]!r} and --tsv={paths[i]!r} would both "
                       f"write {stem}.* in --output_dir; allowed: files with different names")
  return [_read_one_tsv(path, max_examples) for path in paths]


def _read_one_tsv(path: str, max_examples: int | None) -> list[tuple[str, str]]:
  if not fileio.exists(path):
    raise FileNotFoundError(f"--tsv={path!r}: no such file")
  if not fileio.is_remote(path) and os.path.isdir(path):
    raise ValueError(f"--tsv={path!r} is a directory; allowed: a source<TAB>reference file")
  try:
    pairs, _ = tsv_lib.read_tsv(path, strict=True)
  except ValueError as e:
    raise ValueError(f"--tsv: {e}") from e
  if not pairs:
    raise ValueError(f"--tsv={path!r} holds no source<TAB>reference pair")
  return pairs[:max_examples]


# -------------------------------------------------------------------------------- checkpoints
def _steps(directory: str) -> list[int]:
  """Committed orbax steps under `directory` (in-progress saves have non-numeric names)."""
  names = [os.path.basename(p.rstrip("/")) for p in fileio.glob(os.path.join(directory, "*"))]
  return sorted(int(n) for n in names if n.isdigit())


def _is_step_dir(path: str) -> bool:
  return os.path.basename(path).isdigit() and any(
      fileio.exists(os.path.join(path, item)) for item in ("meta", "state"))


def _workdir_checkpoints(workdir: str, which: str) -> tuple[str, str]:
  order = ("best", "bc", "latest") if which == "auto" else (which,)
  for name in order:
    directory = os.path.join(workdir, WORKDIR_CHECKPOINTS[name])
    if _steps(directory):
      return directory, name
  usable = [n for n in WHICH[1:] if _steps(os.path.join(workdir, WORKDIR_CHECKPOINTS[n]))]
  looked = ", ".join(WORKDIR_CHECKPOINTS[name] + "/" for name in order)
  raise checkpointing.CheckpointError(
      f"--policy={workdir!r} is a ReST workdir but {looked} holds no checkpoint "
      f"(--which={which}); " + (f"allowed: --which={'|'.join(usable)}" if usable else
                                "the run has saved no policy yet"))


def find_policy(path: str, which: str = "auto", step: int | None = None) -> PolicyCheckpoint:
  """The checkpoint `--policy`, `--which` and `--checkpoint_step` designate, with its meta."""
  if not fileio.exists(path):
    raise FileNotFoundError(f"--policy={path!r} does not exist; allowed: {POLICY_FORMS}")
  path = fileio.abspath(path).rstrip("/")
  if any(fileio.exists(os.path.join(path, d)) for d in WORKDIR_CHECKPOINTS.values()):
    directory, which = _workdir_checkpoints(path, which)
  elif which != "auto":
    raise ValueError(f"--which={which} needs a ReST workdir, but --policy={path!r} has none of "
                     f"{', '.join(d + '/' for d in WORKDIR_CHECKPOINTS.values())}; allowed for a "
                     "checkpoint directory: --which=auto")
  elif _is_step_dir(path):
    directory, which, named_step = os.path.dirname(path), "checkpoint", int(os.path.basename(path))
    if step is not None and step != named_step:
      raise ValueError(f"--checkpoint_step={step} contradicts --policy={path!r} (step "
                       f"{named_step}); give one of them")
    step = named_step
  else:
    directory, which = path, "checkpoint"
  steps = _steps(directory)
  if not steps:
    raise checkpointing.CheckpointError(f"--policy={path!r}: no checkpoint in {directory}; "
                                        f"allowed: {POLICY_FORMS}")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"--checkpoint_step={step} is not in {directory}; allowed: {steps}")
  return PolicyCheckpoint(directory, step, which, _read_meta(directory, step))


def _read_meta(directory: str, step: int) -> dict[str, Any]:
  checkpointer = checkpointing.Checkpointer(directory, max_to_keep=None)
  try:
    return checkpointer.restore_meta(step)
  except (FileNotFoundError, ValueError, KeyError) as e:
    raise checkpointing.CheckpointError(
        f"--policy: cannot read the meta of checkpoint {directory}/{step} ({e}); allowed: "
        "checkpoints written by the ReST loop (rest_jax.main)") from e
  finally:
    checkpointer.close()


def check_fingerprint(policy: PolicyCheckpoint, vocabulary: str | None) -> dict[str, Any]:
  """The fingerprint meta (model config, task, lengths) the loop writes with every policy."""
  fingerprint = policy.meta.get("fingerprint")
  if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("model"), dict):
    raise checkpointing.CheckpointError(
        f"--policy: checkpoint {policy.path} has no fingerprint meta (model config, task, "
        f"lengths), so it was not written by the ReST loop; meta keys: {sorted(policy.meta)}; "
        "allowed: checkpoints_best/, checkpoints_bc/ or checkpoints/ of a rest_jax.main workdir")
  if vocabulary is None and not fingerprint.get("task"):
    raise checkpointing.CheckpointError(
        f"--policy: the fingerprint of {policy.path} names no task, so the vocabulary is "
        "unknown; pass --vocabulary=ding|byte|<path of a SentencePiece .model>")
  return fingerprint


def decode_lengths(fingerprint: dict[str, Any], max_decode_len: int | None
                   ) -> tuple[int, int]:
  """(max_decode_len, longest source in tokens the model supports, EOS included)."""
  lengths = fingerprint.get("lengths") or [None, DEFAULT_MAX_DECODE_LEN]
  decode_len = max_decode_len or int(lengths[1])
  model = fingerprint["model"]
  max_len = int(model.get("max_len", 512))
  source_cap = max_len - decode_len if model.get("decoder_only") else max_len
  if decode_len > max_len or source_cap < 2:
    raise ValueError(f"--max_decode_len={decode_len} is too long for the model (max_len="
                     f"{max_len}, decoder_only={bool(model.get('decoder_only'))}); allowed: "
                     f"at most {max_len - 2 if model.get('decoder_only') else max_len}")
  return decode_len, source_cap


# --------------------------------------------------------------------------------- decoding
def encode_pairs(pairs: Sequence[tuple[str, str]], vocabulary, max_source_tokens: int,
                 source_prefix: str = "") -> tuple[list[Pair], int]:
  """Pairs with `[prefix] source EOS` token ids, cut to `max_source_tokens` (EOS kept); the cut
  count."""
  from rest_jax.models.transformer import EOS_ID  # pylint: disable=g-import-not-at-top
  from rest_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  source_vocabulary = vocab_lib.source_vocabulary(vocabulary)
  # A pretrained decoder's BOS first (as the run's task put it), then the prefix.
  prefix = list(getattr(vocabulary, "bos_ids", []))
  prefix += list(source_vocabulary.encode(source_prefix)) if source_prefix else []
  out, truncated = [], 0
  for source, reference in pairs:
    ids = prefix + list(source_vocabulary.encode(source))
    if len(ids) + 1 > max_source_tokens:
      ids, truncated = ids[:max_source_tokens - 1], truncated + 1
    out.append(Pair(source, reference, np.asarray(ids + [EOS_ID], np.int32)))
  return out, truncated


def one_line(text: str) -> str:
  """A hypothesis as one TSV field: tabs and line breaks become spaces."""
  return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def score_file(evaluator, params, pairs: Sequence[Pair], reward, desc: str
               ) -> tuple[dict[str, Any], list[str], np.ndarray]:
  """(summary, hypotheses, per-pair rewards in [0, 1]) of one file."""
  from rest_jax import text_metrics  # pylint: disable=g-import-not-at-top
  from rest_jax.rewards.base import score_batch  # pylint: disable=g-import-not-at-top
  hyps = [one_line(h) for h in evaluator.translate(params, pairs, desc=desc)]
  sources, refs = [p.source for p in pairs], [p.reference for p in pairs]
  rewards = score_batch(reward, sources, hyps, refs)
  return text_metrics.summarize_translations(sources, hyps, refs, rewards), hyps, rewards


def load_policy(policy: PolicyCheckpoint, vocabulary: str | None):
  """The policy's params on all local devices, its model and vocabulary (imports TensorFlow)."""
  from rest_jax.rewards import reward_model_training  # pylint: disable=g-import-not-at-top
  loaded = reward_model_training.load_policy_for_sampling(policy.directory, policy.step,
                                                          vocabulary_spec=vocabulary)
  if loaded.vocabulary.vocab_size > loaded.model.config.vocab_size:
    raise ValueError(f"--vocabulary={loaded.vocabulary_name!r} has "
                     f"{loaded.vocabulary.vocab_size} ids but the model only "
                     f"{loaded.model.config.vocab_size}; allowed: the run's vocabulary")
  return loaded


def make_evaluator(loaded, reward, args, decode_len: int, source_len: int):
  from rest_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  shards = sharding_lib.num_batch_shards(loaded.mesh)
  config = evaluate.EvalConfig(decode=args.decode, beam_size=args.beam_size,
                               length_penalty=args.length_penalty,
                               batch_size=-(-args.batch_size // shards) * shards,
                               max_decode_len=decode_len)
  return evaluate.Evaluator(loaded.model, loaded.mesh, loaded.param_shardings,
                            loaded.vocabulary, reward, config, source_len=source_len)


# ----------------------------------------------------------------------------------- outputs
def write_outputs(output_dir: str, stem: str, pairs: Sequence[Pair], hyps: Sequence[str],
                  rewards: np.ndarray, record: dict[str, Any]) -> None:
  fileio.makedirs(output_dir)
  lines = "".join(f"{p.source}\t{p.reference}\t{h}\t{r:.6f}\n"
                  for p, h, r in zip(pairs, hyps, rewards))
  fileio.write_atomic(os.path.join(output_dir, f"{stem}.translations.tsv"),
                      lines.encode("utf-8"))
  text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
  fileio.write_atomic(os.path.join(output_dir, f"{stem}.metrics.json"), text.encode("utf-8"))


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
  """One row per file: the known metrics first, then any other number the summary holds."""
  known = {key for key, _, _ in METRIC_COLUMNS} | {"num_examples"}
  columns = list(METRIC_COLUMNS)
  for record in records:
    for key, value in record["metrics"].items():
      if key not in known and isinstance(value, (int, float)):
        known.add(key)
        columns.append((key, key.replace("_", " "), 3))
  lines = ["| file | examples | " + " | ".join(label for _, label, _ in columns) + " |",
           "|---|---:|" + "---:|" * len(columns)]
  for record in records:
    cells = [_cell(record["metrics"].get(key), digits) for key, _, digits in columns]
    lines.append(f"| {os.path.basename(record['tsv'])} | {record['metrics']['num_examples']:,} "
                 f"| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cell(value: Any, digits: int) -> str:
  return "-" if value is None else f"{value:.{digits}f}"


def _policy_record(args, policy: PolicyCheckpoint, fingerprint, loaded) -> dict[str, Any]:
  return {"path": args.policy, "checkpoint": policy.path, "which": policy.which,
          "step": policy.step, "task": fingerprint.get("task"),
          "vocabulary": loaded.vocabulary_name,
          "selection_score": policy.meta.get("score", policy.meta.get("best_score"))}


# -------------------------------------------------------------------------------------- run
class CheckedInputs(NamedTuple):
  files: list[list[tuple[str, str]]]  # The (source, reference) pairs of each --tsv.
  policy: PolicyCheckpoint
  fingerprint: dict[str, Any]
  decode_len: int
  source_cap: int  # Longest source (tokens, EOS included) the model supports.
  reward: Any  # rewards.base.Reward


def check_inputs(args: argparse.Namespace) -> CheckedInputs:
  """Every check that needs neither TensorFlow nor compilation, cheapest first."""
  check_flags(args)
  files = read_tsv_files(args.tsv, args.max_examples)
  policy = find_policy(args.policy, args.which, args.checkpoint_step)
  fingerprint = check_fingerprint(policy, args.vocabulary)
  args.source_prefix = check_source_prefix(fingerprint, args.source_prefix)
  decode_len, source_cap = decode_lengths(fingerprint, args.max_decode_len)
  try:  # Last: a learned reward loads its model (and TensorFlow, for its vocabulary).
    reward = reward_registry.reward_from_spec(args.reward)
  except (ValueError, FileNotFoundError, checkpointing.CheckpointError) as e:
    raise ValueError(f"--reward={args.reward!r}: {e}") from e
  return CheckedInputs(files, policy, fingerprint, decode_len, source_cap, reward)


def _settings(args: argparse.Namespace, evaluator) -> dict[str, Any]:
  settings = {"reward": args.reward, "decode": args.decode,
              "max_decode_len": evaluator.config.max_decode_len,
              "source_len": evaluator.source_len, "batch_size": evaluator.config.batch_size,
              "max_examples": args.max_examples, "source_prefix": args.source_prefix}
  if args.decode == "beam":
    settings.update(beam_size=args.beam_size, length_penalty=args.length_penalty)
  return settings


def run(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Checks everything, then decodes and scores each file; returns the per-file records."""
  args = parse_args(argv)
  inputs = check_inputs(args)
  loaded = load_policy(inputs.policy, args.vocabulary)
  print(f"policy: {inputs.policy.path} ({inputs.policy.which}; vocabulary "
        f"{loaded.vocabulary_name}, decode {args.decode}, reward {args.reward})", flush=True)
  encoded = [encode_pairs(pairs, loaded.vocabulary, inputs.source_cap, args.source_prefix)
             for pairs in inputs.files]
  longest = max(len(p.inputs) for pairs, _ in encoded for p in pairs)
  evaluator = make_evaluator(loaded, inputs.reward, args, inputs.decode_len,
                             min(-(-longest // 8) * 8, inputs.source_cap))
  common = {"policy": _policy_record(args, inputs.policy, inputs.fingerprint, loaded),
            "settings": _settings(args, evaluator)}
  records = []
  for path, (pairs, truncated) in zip(args.tsv, encoded):
    stem = output_stem(path)
    summary, hyps, rewards = score_file(evaluator, loaded.params, pairs, inputs.reward, stem)
    record = {"tsv": path, "translations": os.path.join(args.output_dir,
                                                        f"{stem}.translations.tsv"),
              "metrics": summary, "num_truncated_sources": truncated, **common}
    write_outputs(args.output_dir, stem, pairs, hyps, rewards, record)
    records.append(record)
  print("\n" + markdown_table(records))  # After a line break: tqdm leaves none on stderr.
  return records


def main(argv: Sequence[str] | None = None) -> int:
  """The command line: bad input is one `error: ...` line on stderr and exit status 1."""
  from rest_jax.main import configure_logging  # pylint: disable=g-import-not-at-top
  configure_logging()
  try:
    run(argv)
  except (ValueError, FileNotFoundError, checkpointing.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
