"""TFDS builders over the German->English corpora shipped in rest_jax/data.

  ding_de_en   rest_jax/data/ding   Ding example sentences (train / validation / test)
  de_en        rest_jax/data/de_en  dictionary sentences, dictionary terms and software
                                    messages (train / train_terms / validation / test_dict /
                                    test_software), see rest_jax/data/de_en/README.md

Why TFDS for files this small: the same seqio Task code then serves these corpora and the large
TFDS corpora (WMT, TED), and TFDS caches the prepared records, so a run reads TFRecords instead
of re-parsing text. The builders download nothing: `_split_generators` reads the `.tsv.gz` files
from the installed package, so they prepare offline in seconds.

Examples keep the order of the shipped files (`disable_shuffling=True`, keys are line indices),
so the i-th example of a split is line i of its file, which is what `source_id` means in
rest_jax.data.pipeline.

Where the prepared records live: `ensure_prepared(builder_cls, data_dir)` with an explicit
directory, else seqio's TFDS override (`seqio.set_tfds_data_dir_override`), else TFDS's default
($TFDS_DATA_DIR or ~/tensorflow_datasets). The seqio tasks prepare on first use. After
regenerating the shipped files, bump the builder's `VERSION` (a stale cache is detected by its
counts).
"""

from __future__ import annotations

import gzip
import os
from typing import Optional

from etils import epath
import seqio
import tensorflow_datasets as tfds

from rest_jax.data import tsv

DATA_DIR = os.path.dirname(os.path.abspath(__file__))
DING_DIR = os.path.join(DATA_DIR, "ding")
SPLITS = ("train", "validation", "test")
BUILDER_NAME = "ding_de_en"


def _already_registered(name: str) -> bool:
  """True when this module is imported a second time (e.g. reloaded) in one process."""
  try:
    tfds.builder_cls(name)
    return True
  except tfds.core.registered.DatasetNotFoundError:
    return False


class ShippedCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A corpus of `German<TAB>English` .tsv.gz files, one per split, in a package folder."""

  CORPUS_DIR: str = ""
  SPLITS: tuple[str, ...] = ()
  DESCRIPTION = ""
  HOMEPAGE = ""
  LICENSE = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup of a builder's source file needs the `importlib_resources` backport on
    # recent Pythons; this builder's file is known, which keeps that package optional.
    return epath.Path(__file__)

  @classmethod
  def shipped_split_path(cls, split: str) -> str:
    if split not in cls.SPLITS:
      raise ValueError(f"{cls.name} split {split!r} does not exist; splits are {cls.SPLITS}")
    return os.path.join(cls.CORPUS_DIR, f"{split}.tsv.gz")

  @classmethod
  def count_shipped_pairs(cls, split: str) -> int:
    with gzip.open(cls.shipped_split_path(split), "rb") as f:
      return sum(1 for _ in f)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({"de": tfds.features.Text(),
                                             "en": tfds.features.Text()}),
        supervised_keys=("de", "en"), homepage=self.HOMEPAGE, license=self.LICENSE,
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the files ship with the package.
    return {split: self._generate_examples(self.shipped_split_path(split))
            for split in self.SPLITS}

  def _generate_examples(self, path):
    for index, (german, english) in enumerate(tsv.iter_tsv_pairs(path, strict=True)):
      yield index, {"de": german, "en": english}


class DingDeEn(ShippedCorpus, skip_registration=_already_registered(BUILDER_NAME)):
  """German example sentences and their English translations from the Ding dictionary."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "dict-de-en 1.9-6: 13720 train, 1012 validation, 1061 test pairs."}
  CORPUS_DIR, SPLITS = DING_DIR, SPLITS
  DESCRIPTION = ("German example sentences with human English translations from the Ding "
                 "German-English dictionary (Debian dict-de-en), GPL-2+. See "
                 "rest_jax/data/ding/README.md.")
  HOMEPAGE, LICENSE = "https://dict.tu-chemnitz.de/", "GPL-2.0-or-later"


class DeEn(ShippedCorpus, skip_registration=_already_registered("de_en")):
  """Dictionary sentences and terms (Ding, FreeDict) and software messages (gettext)."""

  name = "de_en"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release, see rest_jax/data/de_en/README.md."}
  CORPUS_DIR = os.path.join(DATA_DIR, "de_en")
  SPLITS = ("train", "train_terms", "validation", "test_dict", "test_software")
  DESCRIPTION = ("German->English: example sentences and word/phrase entries of the Ding and "
                 "FreeDict dictionaries, and human translations of software messages from the "
                 "German gettext catalogs of Debian and PyPI packages. See "
                 "rest_jax/data/de_en/README.md (per-source licences).")
  HOMEPAGE, LICENSE = "https://dict.tu-chemnitz.de/", "GPL-2.0-or-later AND others (README)"


def shipped_split_path(split: str) -> str:
  """A Ding split's file (the `de_en` corpus: DeEn.shipped_split_path)."""
  return DingDeEn.shipped_split_path(split)


def count_shipped_pairs(split: str) -> int:
  return DingDeEn.count_shipped_pairs(split)


def resolve_data_dir(data_dir: Optional[str] = None) -> Optional[str]:
  """The directory the shipped-corpus tasks read from (None: TFDS's own default)."""
  # pylint: disable-next=protected-access
  return data_dir or seqio.utils._TFDS_DATA_DIR_OVERRIDE or None


def ensure_prepared(builder_cls, data_dir: Optional[str] = None, count_pairs=None):
  """Prepares a shipped corpus in `data_dir` unless done already; returns the builder.

  Raises RuntimeError when a cache of this version holds different counts than the shipped
  files (they were regenerated without bumping the builder's VERSION).
  """
  count_pairs = count_pairs or builder_cls.count_shipped_pairs
  builder = builder_cls(data_dir=resolve_data_dir(data_dir))
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    builder = builder_cls(data_dir=resolve_data_dir(data_dir))
  for split in builder_cls.SPLITS:
    cached, shipped = builder.info.splits[split].num_examples, count_pairs(split)
    if cached != shipped:
      raise RuntimeError(
          f"prepared {builder_cls.name} {builder.version} in {builder.data_dir} has {cached} "
          f"{split} examples but the shipped file has {shipped}; delete that directory or bump "
          f"{builder_cls.__name__}.VERSION after regenerating {builder_cls.CORPUS_DIR}")
  return builder


def ensure_ding_prepared(data_dir: Optional[str] = None) -> DingDeEn:
  """Prepares `ding_de_en` (see ensure_prepared)."""
  # Looked up at call time so that tests can stand in for the shipped counts.
  return ensure_prepared(DingDeEn, data_dir, lambda split: count_shipped_pairs(split))
