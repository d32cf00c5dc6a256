"""Vocabularies by name, so configs and tasks can say "ding" or a path instead of building objects.

A *vocabulary spec* is one of

  "ding"          the joint German+English SentencePiece model shipped with the Ding corpus
                  (rest_jax/data/ding/spm_4k.model, 4000 pieces)
  "de_en"         the joint model of the larger shipped corpus
                  (rest_jax/data/de_en/spm_8k.model, 8000 pieces)
  "byte"          seqio.ByteVocabulary (UTF-8 bytes; needs no file)
  "hf=DIR"        the tokenizer of a Hugging Face checkpoint directory, with its ids mapped to
                  the imported model's rows (rest_jax.data.hf_vocab)
  a path          any SentencePiece .model file, local or gs://...

All of them follow seqio's id convention: pad 0, EOS 1, UNK 2.

Tasks for large public corpora (WMT, TED, IWSLT) need a vocabulary the user trains for their
corpus, but registering those tasks must not fail on machines that never use them. They hold a
`DeferredVocabulary`, which resolves its spec the first time it is used; with no spec it uses
the *default MT vocabulary*: `set_default_mt_vocabulary(spec)` if called, else the environment
variable REST_JAX_MT_VOCAB, else a placeholder path that does not exist, which produces an
error explaining how to set it.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, Optional, Sequence

import seqio

from rest_jax import hf_checkpoints

DING_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ding")
DING_SPM_PATH = os.path.join(DING_DIR, "spm_4k.model")
DE_EN_SPM_PATH = os.path.join(os.path.dirname(DING_DIR), "de_en", "spm_8k.model")
NAMED_SPECS = ("ding", "de_en", "byte")
ACCEPTED_SPECS = ("'ding', 'de_en', 'byte', 'hf=DIR' (a Hugging Face checkpoint's tokenizer) or "
                  "the path of a SentencePiece .model file")

MT_VOCABULARY_ENV = "REST_JAX_MT_VOCAB"
MT_VOCABULARY_PLACEHOLDER = "~/rest_jax_vocab/SET_REST_JAX_MT_VOCAB.model"
_default_mt_vocabulary_spec: Optional[str] = None


def _exists(path: str) -> bool:
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)
  return os.path.isfile(path)


@functools.lru_cache(maxsize=None)
def get_vocabulary(spec: str) -> seqio.Vocabulary:
  """Returns the vocabulary for a spec; FileNotFoundError if its model file is missing."""
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"vocabulary spec {spec!r} is not a non-empty string; use {ACCEPTED_SPECS}")
  if spec == "byte":
    return seqio.ByteVocabulary()
  if spec.startswith(hf_checkpoints.HF_PREFIX):
    from rest_jax.data import hf_vocab  # pylint: disable=g-import-not-at-top
    return hf_vocab.HFTokenizerVocabulary(
        os.path.expanduser(spec[len(hf_checkpoints.HF_PREFIX):]))
  path = {"ding": DING_SPM_PATH, "de_en": DE_EN_SPM_PATH}.get(spec) or os.path.expanduser(spec)
  if not _exists(path):
    raise FileNotFoundError(
        f"vocabulary spec {spec!r}: SentencePiece model file {path} does not exist; "
        f"accepted specs are {ACCEPTED_SPECS}")
  return seqio.SentencePieceVocabulary(path)


def source_vocabulary(vocabulary: seqio.Vocabulary) -> seqio.Vocabulary:
  """The vocabulary that tokenizes sources for a target vocabulary: its `source_vocabulary`
  (a Marian checkpoint cuts German and English with two SentencePiece models over one id
  table), else the vocabulary itself."""
  return getattr(vocabulary, "source_vocabulary", vocabulary)


def set_default_mt_vocabulary(spec: Optional[str]) -> None:
  """Sets the vocabulary of tasks registered without one; None returns to the env/placeholder."""
  global _default_mt_vocabulary_spec
  _default_mt_vocabulary_spec = spec


def default_mt_vocabulary_spec() -> str:
  return (_default_mt_vocabulary_spec or os.environ.get(MT_VOCABULARY_ENV)
          or MT_VOCABULARY_PLACEHOLDER)


class DeferredVocabulary(seqio.Vocabulary):
  """A vocabulary whose spec is resolved with `get_vocabulary` on first use, not when built."""

  def __init__(self, spec: Optional[str] = None):
    super().__init__(extra_ids=0)
    self._spec = spec

  @property
  def spec(self) -> str:
    return self._spec if self._spec is not None else default_mt_vocabulary_spec()

  def resolve(self) -> seqio.Vocabulary:
    """The concrete vocabulary; explains how to configure it when the file is missing."""
    try:
      return get_vocabulary(self.spec)
    except FileNotFoundError as e:
      if self._spec is not None:
        raise
      raise FileNotFoundError(
          f"{e}. This task uses the default MT vocabulary: set the environment variable "
          f"{MT_VOCABULARY_ENV} or call rest_jax.data.vocab.set_default_mt_vocabulary(path), "
          "or re-register the task with vocabulary_spec=...; scripts/train_vocab.py trains "
          "a SentencePiece model from a TSV corpus") from None

  # Everything below delegates to the resolved vocabulary.
  @property
  def bos_id(self) -> Optional[int]:
    return self.resolve().bos_id

  @property
  def eos_id(self) -> Optional[int]:
    return self.resolve().eos_id

  @property
  def unk_id(self) -> Optional[int]:
    return self.resolve().unk_id

  @property
  def pad_id(self) -> int:
    return self.resolve().pad_id

  @property
  def extra_ids(self) -> int:
    return self.resolve().extra_ids

  @property
  def vocab_size(self) -> int:
    return self.resolve().vocab_size

  @property
  def _base_vocab_size(self) -> int:
    return self.resolve()._base_vocab_size  # pylint: disable=protected-access

  def _encode(self, s: str) -> Sequence[int]:
    return self.resolve().encode(s)

  def encode(self, s) -> Sequence[int]:
    return self.resolve().encode(s)

  def _decode(self, ids):
    return self.resolve().decode(ids)

  def decode(self, ids: Iterable[int]):
    return self.resolve().decode(ids)

  def _encode_tf(self, s):
    return self.resolve().encode_tf(s)

  def encode_tf(self, s):
    return self.resolve().encode_tf(s)

  def _decode_tf(self, ids):
    return self.resolve().decode_tf(ids)

  def decode_tf(self, ids):
    return self.resolve().decode_tf(ids)

  def __eq__(self, other) -> bool:
    return isinstance(other, DeferredVocabulary) and other._spec == self._spec

  def __hash__(self) -> int:
    return hash(("DeferredVocabulary", self._spec))

  def __repr__(self) -> str:
    return f"DeferredVocabulary({self._spec!r})"


def resolve_vocabulary(vocabulary: seqio.Vocabulary) -> seqio.Vocabulary:
  """The concrete vocabulary behind a possibly deferred one."""
  if isinstance(vocabulary, DeferredVocabulary):
    return vocabulary.resolve()
  return vocabulary
