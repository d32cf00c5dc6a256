"""A Hugging Face checkpoint's tokenizer as a seqio vocabulary (vocabulary spec "hf=DIR").

A run that starts from a Hugging Face checkpoint (`rest_loop.run.init_policy = 'hf=DIR'`) must
tokenize its task with that checkpoint's tokenizer, in rest_jax's id convention (padding 0,
end of sequence 1): `HFTokenizerVocabulary(DIR)` wraps the tokenizer found in DIR and maps its
ids through the checkpoint's `TokenMap` (rest_jax.hf_checkpoints), the same permutation the
imported embedding rows went through, so id i here is row i of the imported model.

The tokenizer is `tokenizer.json` (a `tokenizers` fast tokenizer: Llama 3, Qwen2, Gemma, ...;
needs the `tokenizers` package) when present, else Marian's `source.spm` + `target.spm` +
`vocab.json` (two SentencePiece models whose pieces share one id table: German sources are cut
with the source model, English targets with the target model), else `tokenizer.model`
(SentencePiece: Llama 2) or `spiece.model` (T5). Text is encoded without special tokens: the
task's inputs and targets are plain text, and the model sees each sequence as rest_jax writes
it (prompt, then target, then end of sequence), with `bos_ids` before the prompt when the
checkpoint's tokenizer puts a BOS before every text (rest_jax.data.tasks.with_bos). The vocabulary size is the checkpoint's
`config.json` vocab_size (the number of embedding rows, often padded beyond the tokenizer's).

A task tokenizes its `inputs` with `vocabulary.source_vocabulary` (Marian's source side; the
vocabulary itself for every one-tokenizer checkpoint) and its `targets` with the vocabulary.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from rest_jax import fileio
from rest_jax import hf_checkpoints
from rest_jax.hf_checkpoints import MARIAN_TOKENIZER as MARIAN_FILES
from rest_jax.hf_checkpoints import SENTENCEPIECE_MODELS, TOKENIZER_JSON

SIDES = ("target", "source")


class HFTokenizerVocabulary(seqio.Vocabulary):
  """A checkpoint directory's tokenizer with rest_jax's ids (see the module docstring)."""

  def __init__(self, directory: str, side: str = "target"):
    super().__init__(extra_ids=0)
    if side not in SIDES:
      raise ValueError(f"side={side!r}; allowed: {list(SIDES)}.")
    self.directory, self.side = directory, side
    hf = hf_checkpoints.read_config(directory)
    self._size = int(hf["vocab_size"])
    self._encode_ids, self._decode_ids, self.kind, tokens, adds_bos = _load_tokenizer(
        directory, side)
    try:
      self.token_map = hf_checkpoints.token_map_of(hf, tokenizer_size=tokens)
    except ValueError as e:
      raise ValueError(f"{directory}: {e}") from None
    # Decoding drops pad and EOS here, and unk in each tokenizer's decode, as transformers'
    # decode(skip_special_tokens=True) does.
    self._skip = {int(self.token_map.to_hf[0]), int(self.token_map.to_hf[1])}
    unk = hf.get("unk_token_id")
    self._unk = None if unk is None else int(self.token_map.encode(int(unk)))
    self.bos_ids = self._bos_ids(hf, adds_bos)

  def _bos_ids(self, hf, adds_bos) -> list[int]:
    """The ids a prompt starts with: the checkpoint's BOS when its tokenizer puts one first
    (tokenizer_config.json's add_bos_token; else what tokenizer.json's post-processor does;
    else the family's habit: Llama and Gemma do, Qwen2 does not), never for encoder-decoders."""
    bos = hf.get("bos_token_id")
    if bos is None or hf.get("model_type") in ("marian", "t5"):
      return []
    path = os.path.join(self.directory, "tokenizer_config.json")
    settings = json.loads(fileio.read_bytes(path)) if fileio.exists(path) else {}
    if "add_bos_token" in settings:
      add = bool(settings["add_bos_token"])
    elif adds_bos is not None:  # tokenizer.json: its post-processor says.
      add = adds_bos is not False and adds_bos == int(bos)
    else:
      add = hf.get("model_type") in ("llama", "gemma")
    return [int(self.token_map.encode(int(bos)))] if add else []

  @functools.cached_property
  def source_vocabulary(self) -> "HFTokenizerVocabulary":
    """The vocabulary of the task's inputs: Marian's source side, else this one."""
    if self.kind != "marian" or self.side == "source":
      return self
    return HFTokenizerVocabulary(self.directory, side="source")

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
    return (isinstance(other, HFTokenizerVocabulary) and other.side == self.side
            and fileio.abspath(other.directory) == fileio.abspath(self.directory))

  def __hash__(self) -> int:
    return hash((fileio.abspath(self.directory), self.side))


def _marian_tokenizer(directory: str, side: str):
  """Marian's tokenizer: the side's SentencePiece model cuts text into pieces, vocab.json gives
  each piece its id (unknown pieces: <unk>); decoding joins the pieces of the non-special ids."""
  import sentencepiece  # pylint: disable=g-import-not-at-top
  sp = sentencepiece.SentencePieceProcessor(
      model_proto=fileio.read_bytes(os.path.join(directory, f"{side}.spm")))
  table = json.loads(fileio.read_bytes(os.path.join(directory, "vocab.json")))
  if "<unk>" not in table:
    raise ValueError(f"{directory}/vocab.json has no '<unk>' entry (Marian's vocabularies do).")
  unk = table["<unk>"]
  pieces = {i: piece for piece, i in table.items()}
  special = {table[t] for t in ("</s>", "<unk>", "<pad>", "<s>") if t in table}

  def encode(text):
    return [table.get(piece, unk) for piece in sp.encode(text, out_type=str)]

  def decode(ids):
    return sp.decode_pieces([pieces[i] for i in ids if i not in special and i in pieces])

  return encode, decode, "marian", len(table)


def _load_tokenizer(directory: str, side: str = "target"):
  """(encode: str -> checkpoint ids, decode: ids -> str, kind, number of tokens, the id its
  post-processor puts before a text, False for none, None when it has no post-processor) of the
  directory's tokenizer (`side`: Marian's
  source or target model; one tokenizer otherwise)."""
  json_path = os.path.join(directory, TOKENIZER_JSON)
  if fileio.exists(json_path):
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"{json_path}: reading a tokenizer.json needs the `tokenizers` package "
                        "(pip install tokenizers).") from e
    tok = tokenizers.Tokenizer.from_str(fileio.read_bytes(json_path).decode("utf-8"))
    plain, special = (tok.encode("a", add_special_tokens=flag).ids for flag in (False, True))
    # The id its post-processor puts before a text (Llama 3, Gemma: BOS), or False for none.
    first_added = special[0] if special and plain and special[0] != plain[0] else False
    return (lambda s: tok.encode(s, add_special_tokens=False).ids,
            lambda ids: tok.decode(ids, skip_special_tokens=True), TOKENIZER_JSON,
            tok.get_vocab_size(with_added_tokens=True), first_added)
  if all(fileio.exists(os.path.join(directory, name)) for name in MARIAN_FILES):
    return (*_marian_tokenizer(directory, side), None)
  for name in SENTENCEPIECE_MODELS:
    spm_path = os.path.join(directory, name)
    if fileio.exists(spm_path):
      import sentencepiece  # pylint: disable=g-import-not-at-top
      sp = sentencepiece.SentencePieceProcessor(model_proto=fileio.read_bytes(spm_path))
      return (lambda s: sp.encode(s, out_type=int),
              lambda ids: sp.decode([i for i in ids if i != sp.unk_id()]), name,
              sp.get_piece_size(), None)
  raise FileNotFoundError(f"{directory}: no {TOKENIZER_JSON}, {' + '.join(MARIAN_FILES)} or "
                          f"{' / '.join(SENTENCEPIECE_MODELS)}; a run started from a Hugging "
                          "Face checkpoint tokenizes with its tokenizer.")
