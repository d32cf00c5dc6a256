"""Tests for the shipped Ding corpus: files, preparation script, TFDS builder and vocabularies."""

import gzip
import hashlib
import importlib.util
import os
import unicodedata

import pytest
import seqio

from rest_jax.data import ding_tfds
from rest_jax.data import vocab as vocab_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "validation", "test")


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def shipped_pairs(split):
  with gzip.open(ding_tfds.shipped_split_path(split), "rt", encoding="utf-8") as f:
    return [tuple(line.rstrip("\n").split("\t")) for line in f]


@pytest.fixture(scope="module")
def pairs_by_split():
  return {split: shipped_pairs(split) for split in SPLITS}


# --- the shipped files ----------------------------------------------------------------------


def test_shipped_files_have_expected_sizes_and_format(pairs_by_split):
  sizes = {split: len(pairs) for split, pairs in pairs_by_split.items()}
  assert sizes["train"] > 12000 and 800 < sizes["validation"] < 1500 and 800 < sizes["test"] < 1500
  for pairs in pairs_by_split.values():
    for pair in pairs:
      assert len(pair) == 2
      source, reference = pair
      assert source and reference
      assert unicodedata.normalize("NFC", source) == source
      first = source.lstrip("\"'„“”»«‚‘")[0]  # Quoted dialogue keeps its opening quote.
      assert first.isupper() or first.isdigit(), source
      assert source.rstrip("\"'“”»«’")[-1] in ".!?", source
      assert len(source.split()) <= 40 and len(reference.split()) <= 40
      assert not set("[]{}<>|/;\t") & set(source + reference), (source, reference)
  total_bytes = sum(os.path.getsize(ding_tfds.shipped_split_path(s)) for s in SPLITS)
  assert total_bytes < 3_000_000


def test_splits_are_disjoint_by_german_source_and_follow_the_hash(pairs_by_split):
  sources = {split: [source for source, _ in pairs] for split, pairs in pairs_by_split.items()}
  for split in SPLITS:
    assert len(set(sources[split])) == len(sources[split]), f"duplicate source in {split}"
  assert not set(sources["train"]) & set(sources["validation"])
  assert not set(sources["train"]) & set(sources["test"])
  assert not set(sources["validation"]) & set(sources["test"])
  prepare = load_script("prepare_ding")
  for split in SPLITS:
    for source in sources[split][:200]:
      assert prepare.split_of(source, 0.065, 0.065) == split


def test_known_sentence_pair_is_shipped(pairs_by_split):
  everything = dict(pair for pairs in pairs_by_split.values() for pair in pairs)
  assert everything["Die Würde des Menschen ist unantastbar."] == (
      "The dignity of man is inviolable.")


def test_license_files_ship_with_the_data():
  with open(os.path.join(ding_tfds.DING_DIR, "COPYING.ding"), encoding="utf-8") as f:
    assert "GPL-2+" in f.read()
  with open(os.path.join(ding_tfds.DING_DIR, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert "scripts/prepare_ding.py" in readme and "GPL" in readme
  assert f"| train | {len(shipped_pairs('train'))} |" in readme


# --- scripts/prepare_ding.py on a tiny hand-made dictd dictionary ------------------------------

TINY_ENTRIES = [
    ("00-database-short", "", "German - English"),
    ("Die Würde des Menschen ist unantastbar.", "", "The dignity of man is inviolable."),
    ("Haltet den Dieb!", "", "Stop thief! [coll.]"),
    ("Was gibt es Neues?", "", "What’s the news?; What’s new?"),
    ("Er kam zu spät.", "", "He came late / too late."),            # '/' alternative
    ("Aal", " {m}", "eel"),                                           # not a sentence
    ("Er gab jdm. etw. zurück.", "", "He gave sth. back to sb."),     # placeholders
    ("Die Würde des Menschen ist unantastbar.", "", "Human dignity is inviolable."),  # dup
    ("Nur   15 Leute   kamen.", "", "Only 15 people (in total) came."),
    ("Ja, das ist wahr.", "", "yes"),                                  # English not a sentence
]


def write_tiny_dictd(directory):
  """dictd files: entries back to back, index lines 'headword<TAB>offset<TAB>length'."""
  encode = lambda n: "".join(  # pylint: disable=g-long-lambda
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(n >> s) & 63]
      for s in range(30, -1, -6)).lstrip("A") or "A"
  data, index = b"", []
  for headword, notes, translation in TINY_ENTRIES:
    entry = f"{headword}\n{notes}\n   {translation}\n".encode("utf-8")
    index.append(f"{headword.lower()}\t{encode(len(data))}\t{encode(len(entry))}\n")
    data += entry
  dictd = directory / "usr" / "share" / "dictd"
  dictd.mkdir(parents=True)
  with gzip.open(dictd / "german-english.dict.dz", "wb") as f:
    f.write(data)
  (dictd / "german-english.index").write_text("".join(index), encoding="utf-8")
  doc = directory / "usr" / "share" / "doc" / "dict-de-en"
  doc.mkdir(parents=True)
  (doc / "copyright").write_text("License: GPL-2+\n", encoding="utf-8")
  return str(dictd / "german-english.dict.dz")


def test_prepare_script_extracts_cleans_dedups_and_splits(tmp_path):
  prepare = load_script("prepare_ding")
  dict_path = write_tiny_dictd(tmp_path / "pkg")
  out = tmp_path / "out"
  prepare.main(["--dict_path", dict_path, "--output_dir", str(out),
                "--validation_fraction", "0.3", "--test_fraction", "0.3"])
  written = {}
  for split in SPLITS:
    with gzip.open(out / f"{split}.tsv.gz", "rt", encoding="utf-8") as f:
      written[split] = [tuple(line.rstrip("\n").split("\t")) for line in f]
  everything = sorted(pair for pairs in written.values() for pair in pairs)
  assert everything == sorted([
      ("Die Würde des Menschen ist unantastbar.", "The dignity of man is inviolable."),
      ("Haltet den Dieb!", "Stop thief!"),
      ("Was gibt es Neues?", "What’s the news?"),
      ("Nur 15 Leute kamen.", "Only 15 people came."),
  ])
  for split, pairs in written.items():
    for source, _ in pairs:
      assert prepare.split_of(source, 0.3, 0.3) == split
    assert [source for source, _ in pairs] == sorted(
        (source for source, _ in pairs),
        key=lambda s: int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big"))
  assert (out / "COPYING.ding").read_text(encoding="utf-8") == "License: GPL-2+\n"
  readme = (out / "README.md").read_text(encoding="utf-8")
  assert "| shipped pairs | 4 |" in readme and "| dropped: German source seen before | 1 |" in readme
  first_bytes = (out / "train.tsv.gz").read_bytes()
  prepare.main(["--dict_path", dict_path, "--output_dir", str(out),
                "--validation_fraction", "0.3", "--test_fraction", "0.3"])
  assert (out / "train.tsv.gz").read_bytes() == first_bytes


# --- TFDS builder --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_builder(tmp_path_factory):
  return ding_tfds.ensure_ding_prepared(str(tmp_path_factory.mktemp("tfds")))


def test_builder_prepares_offline_with_file_order(prepared_builder, pairs_by_split):
  assert prepared_builder.name == "ding_de_en"
  for split in SPLITS:
    assert prepared_builder.info.splits[split].num_examples == len(pairs_by_split[split])
  dataset = prepared_builder.as_dataset(split="validation").take(5)
  read = [(x["de"].decode(), x["en"].decode()) for x in dataset.as_numpy_iterator()]
  assert read == pairs_by_split["validation"][:5]


def test_prepared_builder_is_reused(prepared_builder):
  again = ding_tfds.ensure_ding_prepared(prepared_builder.data_dir.rsplit("/ding_de_en", 1)[0])
  assert again.data_dir == prepared_builder.data_dir


def test_stale_cache_is_detected(prepared_builder, monkeypatch):
  monkeypatch.setattr(ding_tfds, "count_shipped_pairs", lambda split: 7)
  with pytest.raises(RuntimeError, match="bump"):
    ding_tfds.ensure_ding_prepared(prepared_builder.data_dir.rsplit("/ding_de_en", 1)[0])


# --- vocabularies -------------------------------------------------------------------------


def test_ding_vocabulary_ids_and_round_trip(pairs_by_split):
  vocabulary = vocab_lib.get_vocabulary("ding")
  assert isinstance(vocabulary, seqio.SentencePieceVocabulary)
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  assert vocabulary.vocab_size == 4000
  for source, reference in pairs_by_split["test"][:50]:
    for text in (source, reference):
      ids = vocabulary.encode(text)
      assert 1 not in ids and 0 not in ids
      assert vocabulary.decode(ids) == text
  german = "Die Würde des Menschen ist unantastbar."
  assert len(vocabulary.encode(german)) < len(german.encode("utf-8")) / 2


def test_byte_and_path_specs(tmp_path):
  byte = vocab_lib.get_vocabulary("byte")
  assert byte.decode(byte.encode("Grüße")) == "Grüße"
  by_path = vocab_lib.get_vocabulary(vocab_lib.DING_SPM_PATH)
  assert by_path.encode("Guten Tag.") == vocab_lib.get_vocabulary("ding").encode("Guten Tag.")


def test_missing_vocabulary_file_names_path_and_specs(tmp_path):
  missing = str(tmp_path / "nope.model")
  with pytest.raises(FileNotFoundError, match=r"nope\.model.*'ding', 'de_en', 'byte'"):
    vocab_lib.get_vocabulary(missing)
  with pytest.raises(ValueError, match="non-empty string"):
    vocab_lib.get_vocabulary("")


def test_deferred_vocabulary_resolves_on_use(tmp_path, monkeypatch):
  monkeypatch.delenv(vocab_lib.MT_VOCABULARY_ENV, raising=False)
  deferred = vocab_lib.DeferredVocabulary()  # Building it never touches the file system.
  with pytest.raises(FileNotFoundError, match=vocab_lib.MT_VOCABULARY_ENV):
    deferred.encode("Hallo")
  monkeypatch.setenv(vocab_lib.MT_VOCABULARY_ENV, vocab_lib.DING_SPM_PATH)
  assert deferred.encode("Hallo Welt.") == vocab_lib.get_vocabulary("ding").encode("Hallo Welt.")
  assert deferred.eos_id == 1 and deferred.vocab_size == 4000
  explicit = vocab_lib.DeferredVocabulary(str(tmp_path / "later.model"))
  with pytest.raises(FileNotFoundError, match=r"later\.model"):
    _ = explicit.vocab_size
