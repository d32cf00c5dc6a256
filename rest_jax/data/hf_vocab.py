"""A Hugging Face checkpoint's tokenizer as a seqio vocabulary (vocabulary spec "hf=DIR").

A run that starts from a Hugging Face checkpoint (`rest_loop.run.init_policy = 'hf=DIR'`) must
tokenize its task with that checkpoint's tokenizer, in rest_jax's id convention (padding 0,
end of sequence 1): `HFTokenizerVocabulary(DIR)` wraps the tokenizer found in DIR and maps its
ids through the checkpoint's `TokenMap` (rest_jax.hf_checkpoints), the same permutation the
imported embedding rows went through, so id i here is row i of the imported model.

The tokenizer is `tokenizer.json` (a `tokenizers` fast tokenizer: Llama 3, Qwen2, Gemma, ...;
needs the `tokenizers` package) when present, else `tokenizer.model` (SentencePiece: Llama 2,
Marian, T5). Text is encoded without special tokens (no BOS): the task's inputs and targets are
plain text, and the model sees each sequence as rest_jax writes it (prompt, then target, then
end of sequence). The vocabulary size is the checkpoint's `config.json` vocab_size (the number
of embedding rows, often padded beyond the tokenizer's).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from rest_jax import fileio
from rest_jax import hf_checkpoints
from rest_jax.hf_checkpoints import SENTENCEPIECE_MODEL, TOKENIZER_JSON


class HFTokenizerVocabulary(seqio.Vocabulary):
  """A checkpoint directory's tokenizer with rest_jax's ids (see the module docstring)."""

  def __init__(self, directory: str):
    super().__init__(extra_ids=0)
    self.directory = directory
    hf = hf_checkpoints.read_config(directory)
    self._size = int(hf["vocab_size"])
    self._encode_ids, self._decode_ids, self.kind, tokens = _load_tokenizer(directory)
    try:
      self.token_map = hf_checkpoints.token_map_of(hf, tokenizer_size=tokens)
    except ValueError as e:
      raise ValueError(f"{directory}: {e}") from None
    self._skip = {int(self.token_map.to_hf[0]), int(self.token_map.to_hf[1])}  # pad, EOS
    unk = hf.get("unk_token_id")
    self._unk = None if unk is None else int(self.token_map.encode(int(unk)))

  @property
  def eos_id(self) -> int:
    return 1

  @property
  def unk_id(self) -> int | None:
    return self._unk

  @property
  def _base_vocab_size(self) -> int:
    return self._size

  def _encode(self, s: str) -> Sequence[int]:
    ids = self._encode_ids(s)
    if any(not 0 <= i < self._size for i in ids):
      raise ValueError(f"{self.directory}: the tokenizer produced an id outside the model's "
                       f"vocabulary [0, {self._size}) for {s[:60]!r}.")
    return [int(i) for i in self.token_map.encode(np.asarray(ids, np.int64))] if ids else []

  def _decode(self, ids) -> str:
    theirs = [int(i) for i in self.token_map.decode(np.asarray(list(ids), np.int64))]
    return self._decode_ids([i for i in theirs if i not in self._skip])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def encode(text):
      return np.asarray(self._encode(text.numpy().decode("utf-8")), np.int32)
    ids = tf.py_function(encode, [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def decode(row):
      return self._decode(row.numpy().tolist()).encode("utf-8")
    text = tf.py_function(decode, [ids], tf.string)
    text.set_shape([])
    return text

  def __eq__(self, other) -> bool:
    return (isinstance(other, HFTokenizerVocabulary)
            and fileio.abspath(other.directory) == fileio.abspath(self.directory))

  def __hash__(self) -> int:
    return hash(fileio.abspath(self.directory))


def _load_tokenizer(directory: str):
  """(encode: str -> checkpoint ids, decode: ids -> str, kind, number of tokens) of the
  directory's tokenizer."""
  json_path = os.path.join(directory, TOKENIZER_JSON)
  spm_path = os.path.join(directory, SENTENCEPIECE_MODEL)
  if fileio.exists(json_path):
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"{json_path}: reading a tokenizer.json needs the `tokenizers` package "
                        "(pip install tokenizers).") from e
    tok = tokenizers.Tokenizer.from_str(fileio.read_bytes(json_path).decode("utf-8"))
    return (lambda s: tok.encode(s, add_special_tokens=False).ids,
            lambda ids: tok.decode(ids, skip_special_tokens=True), TOKENIZER_JSON,
            tok.get_vocab_size(with_added_tokens=True))
  if fileio.exists(spm_path):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    sp = sentencepiece.SentencePieceProcessor(model_proto=fileio.read_bytes(spm_path))
    return (lambda s: sp.encode(s, out_type=int), lambda ids: sp.decode(ids),
            SENTENCEPIECE_MODEL, sp.get_piece_size())
  raise FileNotFoundError(f"{directory}: no {TOKENIZER_JSON} or {SENTENCEPIECE_MODEL}; a run "
                          "started from a Hugging Face checkpoint tokenizes with its tokenizer.")
