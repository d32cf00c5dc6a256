"""File access that works for local paths and for cloud paths such as gs://bucket/workdir.

Local paths use the standard library (with fsync and atomic renames); paths with a scheme go
through TensorFlow's gfile (which the input pipeline already depends on), so a workdir on GCS —
what multi-host TPU runs need — works for results, grown shards and reports alike. Orbax handles
checkpoints on either kind of path by itself.
"""

from __future__ import annotations

import builtins
import glob as glob_lib
import os
import uuid
from typing import IO


def is_remote(path: str | os.PathLike) -> bool:
  return "://" in os.fspath(path)


def _gfile():
  import tensorflow as tf  # Imported lazily: only cloud paths need it.
  return tf.io.gfile


def abspath(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "r") -> IO:
  """Opens for reading or writing; text modes use UTF-8."""
  if is_remote(path):
    return _gfile().GFile(path, mode)
  return builtins.open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def read_bytes(path: str) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` so that readers see either the old file or the whole new one."""
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # Unique: processes may race.
  with open_file(tmp, "wb") as f:
    f.write(data)
    if not is_remote(path):
      f.flush()
      os.fsync(f.fileno())
  if is_remote(path):
    _gfile().rename(tmp, path, overwrite=True)
  else:
    os.replace(tmp, path)


def append_line(path: str, line: str) -> None:
  """Appends one line durably (cloud objects cannot be appended to: they are rewritten)."""
  if is_remote(path):
    old = read_bytes(path) if exists(path) else b""
    write_atomic(path, old + (line + "\n").encode("utf-8"))
    return
  with builtins.open(path, "a", encoding="utf-8") as f:
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())


def rename(source: str, target: str) -> None:
  """Renames a file, replacing `target` if it exists."""
  if is_remote(source):
    _gfile().rename(source, target, overwrite=True)
  else:
    os.replace(source, target)


def truncate(path: str, size: int) -> None:
  if is_remote(path):
    write_atomic(path, read_bytes(path)[:size])
  else:
    with builtins.open(path, "r+b") as f:
      f.truncate(size)


def glob(pattern: str) -> list[str]:
  return sorted(_gfile().glob(pattern) if is_remote(pattern) else glob_lib.glob(pattern))
