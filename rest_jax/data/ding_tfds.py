"""TFDS builder `ding_de_en` over the German->English sentence pairs shipped in rest_jax/data/ding.

Why TFDS for 16k sentence pairs: the same seqio Task code then serves this corpus and the large
TFDS corpora (WMT, TED), and TFDS caches the prepared records, so a run reads TFRecords instead of
re-parsing text. The builder downloads nothing: `_split_generators` reads the `.tsv.gz` files
from the installed package, so it prepares offline in about a second.

Examples keep the order of the shipped files (`disable_shuffling=True`, keys are line indices),
so the i-th example of a split is line i of its file, which is what `source_id` means in
rest_jax.data.pipeline.

Where the prepared records live: `ensure_ding_prepared(data_dir)` with an explicit directory,
else seqio's TFDS override (`seqio.set_tfds_data_dir_override`), else TFDS's default
($TFDS_DATA_DIR or ~/tensorflow_datasets). The seqio task `ding_de_en` prepares on first use.
After regenerating the shipped files, bump `VERSION` (a stale cache is detected by its counts).
"""

from __future__ import annotations

import gzip
import os
from typing import Optional

from etils import epath
import seqio
import tensorflow_datasets as tfds

from rest_jax.data import tsv

DING_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ding")
SPLITS = ("train", "validation", "test")
BUILDER_NAME = "ding_de_en"


def shipped_split_path(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"ding split {split!r} does not exist; splits are {SPLITS}")
  return os.path.join(DING_DIR, f"{split}.tsv.gz")


def count_shipped_pairs(split: str) -> int:
  with gzip.open(shipped_split_path(split), "rb") as f:
    return sum(1 for _ in f)


def _already_registered() -> bool:
  """True when this module is imported a second time (e.g. reloaded) in one process."""
  try:
    tfds.builder_cls(BUILDER_NAME)
    return True
  except tfds.core.registered.DatasetNotFoundError:
    return False


class DingDeEn(tfds.core.GeneratorBasedBuilder, skip_registration=_already_registered()):
  """German example sentences and their English translations from the Ding dictionary."""

  name = BUILDER_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "dict-de-en 1.9-6: 13720 train, 1012 validation, 1061 test pairs."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup of a builder's source file needs the `importlib_resources` backport on
    # recent Pythons; this builder's file is known, which keeps that package optional.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "German example sentences with human English translations from the Ding "
            "German-English dictionary (Debian dict-de-en), GPL-2+. See "
            "rest_jax/data/ding/README.md."),
        features=tfds.features.FeaturesDict({
            "de": tfds.features.Text(),
            "en": tfds.features.Text(),
        }),
        supervised_keys=("de", "en"),
        homepage="https://dict.tu-chemnitz.de/",
        license="GPL-2.0-or-later",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the files ship with the package.
    return {split: self._generate_examples(shipped_split_path(split)) for split in SPLITS}

  def _generate_examples(self, path):
    for index, (german, english) in enumerate(tsv.iter_tsv_pairs(path, strict=True)):
      yield index, {"de": german, "en": english}


def resolve_data_dir(data_dir: Optional[str] = None) -> Optional[str]:
  """The directory the `ding_de_en` task reads from (None: TFDS's own default)."""
  # pylint: disable-next=protected-access
  return data_dir or seqio.utils._TFDS_DATA_DIR_OVERRIDE or None


def ensure_ding_prepared(data_dir: Optional[str] = None) -> DingDeEn:
  """Prepares `ding_de_en` in `data_dir` unless done already; returns the prepared builder.

  Raises RuntimeError when a cache of this version holds different counts than the shipped
  files (they were regenerated without bumping DingDeEn.VERSION).
  """
  builder = DingDeEn(data_dir=resolve_data_dir(data_dir))
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    builder = DingDeEn(data_dir=resolve_data_dir(data_dir))
  for split in SPLITS:
    cached, shipped = builder.info.splits[split].num_examples, count_shipped_pairs(split)
    if cached != shipped:
      raise RuntimeError(
          f"prepared {BUILDER_NAME} {builder.version} in {builder.data_dir} has {cached} "
          f"{split} examples but the shipped file has {shipped}; delete that directory or bump "
          "DingDeEn.VERSION after regenerating rest_jax/data/ding")
  return builder
