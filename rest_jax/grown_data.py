"""Grown data on disk: shards written as they are produced, read back with a filter.

Layout of one Grow step: `<workdir>/grown/grow_<g>/manifest.json` (the settings that produced
it) and `shard-<k>-of-<n>.npz`, where shard k holds every record of the sources whose *position*
in the training-source list falls in [k * sources_per_shard, (k + 1) * sources_per_shard). A
shard is written to a temporary name and renamed when complete, so after a crash a shard file is
either whole or absent: a resumed Grow regenerates exactly the missing shards (their sampling key
depends only on (seed, grow step, shard index)), never duplicating records. A shard damaged later
(truncated, garbled) makes `read_all` raise `UnreadableShardsError` naming it; the loop then sets
it aside (`<shard>.unreadable`) and regrows just that shard. With several
processes, shard k is written by process k % process_count; every process reads all shards.
Beside each shard, `<shard>.wall_s` holds the seconds its sampling and scoring took (kept out of
the shard so that its bytes depend on the seed only).

Each record: source id, source tokens and text, sample tokens and text, per-token behaviour
log-probs, reward, grow step, policy step, seed, sample index (-1 for the human reference of the
original data D, which is stored alongside its samples with `is_original=True`). Behaviour
log-probs are those of the distribution the sample was drawn from (temperature, top-k, top-p);
an original's are unknown and stored as zeros (see `grow`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from typing import Any, Sequence

import numpy as np

from rest_jax import fileio
from rest_jax import filters as filters_lib

# Bumped whenever what a Grow step writes changes meaning, so old grown data is never mixed in.
# 3: behaviour_logprobs are the sampling distribution's (were the policy's at temperature 1);
# truncated samples follow GrowConfig.truncated_samples.
FORMAT_VERSION = 3

UNREADABLE_SUFFIX = ".unreadable"
_RAGGED = ("source_tokens", "sample_tokens", "behaviour_logprobs")
_TEXT = ("source_text", "sample_text")
WALL_SUFFIX = ".wall_s"  # <shard>.wall_s: the shard's sampling and scoring seconds.
_SCALAR = ("source_id", "sample_index", "reward", "is_original", "grow_step", "policy_step",
           "seed")


@dataclasses.dataclass
class GrownRecords:
  """Column-oriented records. Ragged columns are lists of 1-D numpy arrays."""

  source_id: np.ndarray  # [M] int64
  sample_index: np.ndarray  # [M] int32, -1 for the original reference
  reward: np.ndarray  # [M] float32 in [0, 1]
  is_original: np.ndarray  # [M] bool
  grow_step: np.ndarray  # [M] int32
  policy_step: np.ndarray  # [M] int64, optimizer step of the policy that sampled
  seed: np.ndarray  # [M] int64
  source_tokens: list[np.ndarray]
  sample_tokens: list[np.ndarray]
  behaviour_logprobs: list[np.ndarray]
  source_text: list[str]
  sample_text: list[str]

  def __len__(self) -> int:
    return len(self.source_id)

  def select(self, mask_or_index: np.ndarray) -> "GrownRecords":
    index = (np.flatnonzero(mask_or_index) if np.asarray(mask_or_index).dtype == bool
             else np.asarray(mask_or_index))
    out = {}
    for field in dataclasses.fields(self):
      column = getattr(self, field.name)
      out[field.name] = (column[index] if isinstance(column, np.ndarray)
                         else [column[i] for i in index])
    return GrownRecords(**out)

  def columns(self) -> filters_lib.GrownColumns:
    """The view the filters work on (sample identity = its token bytes)."""
    keys = np.empty(len(self), dtype=object)
    keys[:] = [t.astype(np.int32).tobytes() for t in self.sample_tokens]
    return filters_lib.GrownColumns(source_id=self.source_id.astype(np.int64),
                                    reward=self.reward.astype(np.float32),
                                    is_original=self.is_original.astype(bool), sample_key=keys)

  @staticmethod
  def concatenate(parts: Sequence["GrownRecords"]) -> "GrownRecords":
    if not parts:
      return empty_records()
    out = {}
    for field in dataclasses.fields(GrownRecords):
      columns = [getattr(p, field.name) for p in parts]
      out[field.name] = (np.concatenate(columns) if isinstance(columns[0], np.ndarray)
                         else [x for c in columns for x in c])
    return GrownRecords(**out)


class UnreadableShardsError(ValueError):
  """Shards of a Grow step that exist but cannot be read: `shards` is [(path, reason)]."""

  def __init__(self, directory: str, shards: Sequence[tuple[str, str]]):
    self.shards = list(shards)
    super().__init__(f"{len(self.shards)} unreadable shard(s) in {directory}: "
                     + "; ".join(f"{os.path.basename(p)} ({r})" for p, r in self.shards)
                     + ". Re-running the experiment regrows them.")


def empty_records() -> GrownRecords:
  ints = lambda dt: np.zeros((0,), dt)
  return GrownRecords(ints(np.int64), ints(np.int32), ints(np.float32), ints(bool),
                      ints(np.int32), ints(np.int64), ints(np.int64), [], [], [], [], [])


def _flatten(rows: Sequence[np.ndarray], dtype) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.array([len(r) for r in rows], np.int64)
  flat = np.concatenate([np.asarray(r, dtype) for r in rows]) if rows else np.zeros(0, dtype)
  return flat, lengths


def _unflatten(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
  return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _encode_text(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  encoded = [t.encode("utf-8") for t in texts]
  lengths = np.array([len(e) for e in encoded], np.int64)
  return np.frombuffer(b"".join(encoded), np.uint8).copy(), lengths


def _decode_text(flat: np.ndarray, lengths: np.ndarray) -> list[str]:
  blob = flat.tobytes()
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  return [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(len(lengths))]


class GrowStore:
  """Shards of one Grow step under `<root>/grow_<g>`."""

  def __init__(self, root: str, grow_step: int):
    self.grow_step = grow_step
    self.directory = os.path.join(root, f"grow_{grow_step}")

  # -------------------------------------------------------------------------- manifest
  def manifest_path(self) -> str:
    return os.path.join(self.directory, "manifest.json")

  def ensure_manifest(self, settings: dict[str, Any]) -> None:
    """Writes the settings once; a later run with different settings is refused."""
    fileio.makedirs(self.directory)
    path = self.manifest_path()
    settings = json.loads(json.dumps(dict(settings, format_version=FORMAT_VERSION)))
    if fileio.exists(path):
      existing = json.loads(fileio.read_bytes(path))
      if existing != settings:
        changed = sorted(k for k in set(existing) | set(settings)
                         if existing.get(k) != settings.get(k))
        raise ValueError(
            f"Grown data in {self.directory} was produced with different settings "
            f"(changed: {changed}; on disk: {[existing.get(k) for k in changed]}, now: "
            f"{[settings.get(k) for k in changed]}). Use a new workdir or delete that folder.")
      return
    fileio.write_atomic(path, json.dumps(settings, indent=2, sort_keys=True).encode())

  def _manifest(self) -> dict[str, Any]:
    """The written settings ({} before the Grow step starts)."""
    path = self.manifest_path()
    return json.loads(fileio.read_bytes(path)) if fileio.exists(path) else {}

  # ---------------------------------------------------------------------------- shards
  def shard_path(self, index: int, num_shards: int) -> str:
    return os.path.join(self.directory, f"shard-{index:05d}-of-{num_shards:05d}.npz")

  def has_shard(self, index: int, num_shards: int) -> bool:
    return fileio.exists(self.shard_path(index, num_shards))

  def write_shard(self, index: int, num_shards: int, records: GrownRecords,
                  wall_s: float | None = None) -> None:
    """`wall_s`: the seconds it took to sample and score the shard, kept beside it in
    `<shard>.wall_s` (written first; see `wall_seconds`), so the shard's bytes stay a function
    of the seed alone."""
    path = self.shard_path(index, num_shards)
    if wall_s is not None:
      fileio.write_atomic(path + WALL_SUFFIX, f"{wall_s:.6f}\n".encode())
    arrays: dict[str, np.ndarray] = {name: np.asarray(getattr(records, name)) for name in _SCALAR}
    for name, dtype in zip(_RAGGED, (np.int32, np.int32, np.float32)):
      arrays[name], arrays[name + "_len"] = _flatten(getattr(records, name), dtype)
    for name in _TEXT:
      arrays[name], arrays[name + "_len"] = _encode_text(getattr(records, name))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fileio.write_atomic(path, buffer.getvalue())

  def read_shard(self, path: str) -> GrownRecords:
    with np.load(io.BytesIO(fileio.read_bytes(path))) as z:
      out: dict[str, Any] = {name: z[name] for name in _SCALAR}
      for name in _RAGGED:
        out[name] = _unflatten(z[name], z[name + "_len"])
      for name in _TEXT:
        out[name] = _decode_text(z[name], z[name + "_len"])
    return GrownRecords(**out)

  def wall_seconds(self) -> float | None:
    """The Grow step's wall seconds: the shards' sampling and scoring times, where shards that
    processes wrote side by side (k * P + p for p < P) count once, by the slowest. None if a
    shard has no time (written before times were kept, or killed between the two writes)."""
    files = self.shard_files()
    if not files:
      return None
    processes = int(self._manifest().get("processes", 1))
    rounds: dict[int, float] = {}
    for f in files:
      if not fileio.exists(f + WALL_SUFFIX):
        return None
      wall = float(fileio.read_bytes(f + WALL_SUFFIX))
      k = int(os.path.basename(f).split("-")[1]) // processes
      rounds[k] = max(rounds.get(k, 0.0), wall)
    return sum(rounds.values())

  def set_aside(self, path: str) -> str:
    """Renames an unreadable shard out of the way (kept for inspection, no longer counted)."""
    target = path + UNREADABLE_SUFFIX
    fileio.rename(path, target)
    return target

  def shard_files(self) -> list[str]:
    return fileio.glob(os.path.join(self.directory, "shard-*-of-*.npz"))

  def read_all(self, expected_shards: int | None = None) -> GrownRecords:
    """Every record of the Grow step in canonical (source id, sample index) order, so the data
    an Improve round sees does not depend on how the shards were laid out."""
    files = self.shard_files()
    if expected_shards is None:
      expected_shards = self._manifest().get("num_shards")
    if expected_shards is not None and len(files) != expected_shards:
      raise ValueError(f"Grow step {self.grow_step} in {self.directory} has {len(files)} of "
                       f"{expected_shards} shards; re-run to finish the Grow step.")
    parts, unreadable = [], []
    for f in files:
      try:
        parts.append(self.read_shard(f))
      except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        unreadable.append((f, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    if unreadable:
      raise UnreadableShardsError(self.directory, unreadable)
    records = GrownRecords.concatenate(parts)
    return records.select(np.lexsort((records.sample_index, records.source_id)))

