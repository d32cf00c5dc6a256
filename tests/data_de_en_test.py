"""Tests for the shipped `de_en` corpus: files, splits, the preparation script, TFDS and seqio."""

import collections
import gzip
import hashlib
import json
import os
import struct
import unicodedata
import zipfile

import pytest

from rest_jax.data import ding_tfds
from rest_jax.data import vocab as vocab_lib
from tests.data_ding_test import load_script, write_tiny_dictd

CORPUS = ding_tfds.DeEn.CORPUS_DIR
SPLITS = ding_tfds.DeEn.SPLITS
HELD_OUT = ("validation", "test_dict", "test_software")
prepare = load_script("prepare_de_en")


def read_pairs(path):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [tuple(line.rstrip("\n").split("\t")) for line in f]


@pytest.fixture(scope="module")
def shipped():
  pairs = {split: read_pairs(ding_tfds.DeEn.shipped_split_path(split)) for split in SPLITS}
  pairs["django"] = read_pairs(os.path.join(CORPUS, "external", "django.tsv.gz"))
  return pairs


# --- the shipped files ----------------------------------------------------------------------


def test_sizes_and_format(shipped):
  sizes = {split: len(pairs) for split, pairs in shipped.items()}
  assert sizes["train"] > 40_000 and sizes["train_terms"] > 300_000
  assert 1000 < sizes["validation"] < 2000 and sizes["test_dict"] > 1000
  assert sizes["test_software"] > 1000 and sizes["django"] > 200
  for split, pairs in shipped.items():
    for pair in pairs[:5000]:
      assert len(pair) == 2 and all(pair), (split, pair)
      assert all(unicodedata.normalize("NFC", side) == side for side in pair)
      assert pair[0] != pair[1]


def test_no_normalised_source_in_two_splits(shipped):
  keys = {split: {prepare.normalize_source(g) for g, _ in pairs}
          for split, pairs in shipped.items()}
  for split, pairs in shipped.items():
    if split != "django":
      assert len(keys[split]) == len(pairs), f"duplicate normalised source in {split}"
  names = list(keys)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert not keys[a] & keys[b], (a, b, sorted(keys[a] & keys[b])[:3])


def test_software_messages_carry_no_format_or_markup_noise(shipped):
  for split in ("test_software", "django"):
    for german, english in shipped[split]:
      for side in (german, english):
        assert prepare.clean_message(side) == side, (split, side)
        assert not any(mark in side for mark in ("%s", "%d", "{0}", "<b>", "&amp;", "\\n"))


def test_manifest_hashes_match_the_files_and_readme_states_counts(shipped):
  with open(os.path.join(CORPUS, "manifest.json"), encoding="utf-8") as f:
    manifest = json.load(f)
  for name, digest in manifest["sha256"].items():
    with open(os.path.join(CORPUS, name), "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == digest, name
  assert manifest["pairs"] == {split: len(shipped[split]) for split in SPLITS}
  assert manifest["external_django"] == len(shipped["django"])
  sources = {row["source"] for row in manifest["sources"]}
  assert {"dict-de-en", "dict-freedict-deu-eng", "libreoffice-l10n-de", "Django"} <= sources
  with open(os.path.join(CORPUS, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  for split in SPLITS:
    assert f"| {split} | {len(shipped[split])} |" in readme
  assert "GPL-2+" in readme and "MPL-2.0" in readme and "scripts/prepare_de_en.py" in readme
  with gzip.open(os.path.join(CORPUS, "COPYRIGHTS.txt.gz"), "rt", encoding="utf-8") as f:
    assert "libreoffice-l10n-de" in f.read()


def test_vocabulary_covers_the_corpus(shipped):
  vocabulary = vocab_lib.get_vocabulary("de_en")
  assert vocabulary.vocab_size == 8000
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  for split in HELD_OUT:
    for german, english in shipped[split][:100]:
      for text in (german, english):
        assert vocabulary.unk_id not in vocabulary.encode(text)


# --- scripts/prepare_de_en.py on tiny hand-made packages --------------------------------------


def mo_bytes(entries, charset="UTF-8"):
  """A little-endian gettext .mo file with a header and (msgid, msgstr) entries."""
  entries = [(b"", f"Content-Type: text/plain; charset={charset}\n".encode("ascii"))] + [
      (k.encode(charset), v.encode(charset)) for k, v in entries]
  entries.sort()
  n = len(entries)
  originals_at, translations_at = 28, 28 + 8 * n
  data_at = translations_at + 8 * n
  tables, blob = [b"", b""], b""
  for column in (0, 1):
    for entry in entries:
      text = entry[column]
      tables[column] += struct.pack("<2I", len(text), data_at + len(blob))
      blob += text + b"\0"
  header = struct.pack("<7I", 0x950412DE, 0, n, originals_at, translations_at, 0, 0)
  return header + tables[0] + tables[1] + blob


def test_read_mo_handles_contexts_plurals_and_charsets():
  data = mo_bytes([("Open", "Öffnen"), ("menu\x04Quit", "Beenden"),
                   ("%d file\x00%d files", "%d Datei\x00%d Dateien")], charset="ISO-8859-1")
  assert sorted(prepare.read_mo(data)) == [("%d file", "%d Datei"), ("Open", "Öffnen"),
                                           ("Quit", "Beenden")]
  with pytest.raises(ValueError, match="magic"):
    prepare.read_mo(b"\0" * 40)


@pytest.mark.parametrize("raw, clean", [
    ("_Open", "Open"), ("&Save file", "Save file"), ("~Neu", "Neu"), ("Datei (_D)", "Datei"),
    ("Open...", "Open"), ("Öffnen …", "Öffnen"), ("Fast && Furious", "Fast & Furious"),
    ("Name:", "Name"), ("cannot open %s", None), ("Wert {0}", None), ("<b>Bold</b>", None),
    ("line\nbreak", None), ("see https://x.org", None), ("use --force", None),
    ("/usr/bin/foo", None), ("ABC DEF", None), ("1234", None), ("$(ARG1) fehlt", None),
])
def test_clean_message(raw, clean):
  assert prepare.clean_message(raw) == clean


FREEDICT = """
00-database-info
Kompressormotoren /kɔmp/ <pl>
supercharger engines
   Synonyms: {Auflademotoren}

Ausgabe /ˈaʊs/ <fem, n, sg>
edition <n>ed.,  /ˈeːt/
      "Die Ausgabe ist vergriffen."  - The edition is out of print.
      "in der Online-Ausgabe von"  - in the online edition of
"""


def fake_sources(tmp_path):
  """Package roots for two dictionaries, two catalog packages, Sphinx and Django."""
  roots = {}
  ding_root = tmp_path / "dict-de-en"
  write_tiny_dictd(ding_root)
  roots["dict-de-en"] = str(ding_root)
  free = tmp_path / "dict-freedict-deu-eng" / "usr" / "share" / "dictd"
  free.mkdir(parents=True)
  with gzip.open(free / "freedict-deu-eng.dict.dz", "wt", encoding="utf-8") as f:
    f.write(FREEDICT)
  roots["dict-freedict-deu-eng"] = str(tmp_path / "dict-freedict-deu-eng")
  messages = [("Open file", "Datei öffnen"), ("_Quit", "_Beenden"), ("cannot read %s", "x %s"),
              ("OK", "OK"), ("Save the document", "Das Dokument speichern"),
              ("Open file...", "Datei _öffnen ...")]
  for name, catalog, entries in (
      ("tool", "tool", messages), ("iso-codes", "iso_3166-1", [("Germany", "Deutschland")])):
    folder = tmp_path / name / "usr" / "share" / "locale" / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / f"{catalog}.mo").write_bytes(mo_bytes(entries))
    doc = tmp_path / name / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nLicense: GPL-3+\n", encoding="utf-8")
    roots[name] = str(tmp_path / name)
  for name, entries in (("Sphinx", [("Search", "Suche")]),
                        ("Django", [("Save the document", "Das Dokument speichern"),
                                    ("Log out", "Abmelden")])):
    wheel = tmp_path / f"{name}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
      archive.writestr(f"{name.lower()}/locale/de/LC_MESSAGES/{name.lower()}.mo",
                       mo_bytes(entries))
    roots[name] = str(wheel)
  return roots


def run_prepare(tmp_path, monkeypatch, out):
  roots = fake_sources(tmp_path / f"src_{out.name}")
  monkeypatch.setattr(prepare, "DEBIAN_CATALOGS", (("tool", "1"), ("iso-codes", "2")))
  monkeypatch.setattr(prepare, "fetch_debian", lambda name, version, cache: roots[name])
  monkeypatch.setattr(prepare, "fetch_wheel", lambda name, version, cache: roots[name])
  prepare.main([f"--output_dir={out}", f"--cache_dir={tmp_path / 'cache'}",
                "--validation_fraction=0", "--test_fraction=0",
                "--software_validation_fraction=0", "--software_test_fraction=0"])
  return {split: read_pairs(out / f"{split}.tsv.gz") for split in SPLITS}


def test_prepare_script_end_to_end_is_deterministic(tmp_path, monkeypatch):
  written = run_prepare(tmp_path, monkeypatch, tmp_path / "out")
  assert sorted(written["train"]) == sorted([
      ("Die Würde des Menschen ist unantastbar.", "The dignity of man is inviolable."),
      ("Haltet den Dieb!", "Stop thief!"), ("Was gibt es Neues?", "What’s the news?"),
      ("Nur 15 Leute kamen.", "Only 15 people came."),
      ("Die Ausgabe ist vergriffen.", "The edition is out of print."),
      ("Datei öffnen", "Open file"), ("Beenden", "Quit"),
      ("Das Dokument speichern", "Save the document"), ("Suche", "Search")])
  terms = dict(written["train_terms"])
  assert terms["Deutschland"] == "Germany" and terms["Aal"] == "eel"
  assert terms["Kompressormotoren"] == "supercharger engines"
  # Django's pair already in the corpus is dropped from the external test.
  assert read_pairs(tmp_path / "out" / "external" / "django.tsv.gz") == [("Abmelden", "Log out")]
  readme = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
  assert "| tool | 1 | debian | GPL-3+ |" in readme
  first = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.gz")}
  run_prepare(tmp_path, monkeypatch, tmp_path / "again")
  assert {p.name: p.read_bytes() for p in (tmp_path / "again").glob("*.gz")} == first


def test_held_out_sources_never_reach_train():
  args = prepare.parse_args(["--validation_fraction=0.5", "--test_fraction=0.5",
                             "--software_validation_fraction=0",
                             "--software_test_fraction=0"])
  domains = {"sentences": [("Das ist gut.", "That is good.", "a")],
             "software": [("das ist gut", "this is fine", "b"), ("Neu", "New", "b")],
             "terms": [("DAS IST GUT!", "that's good", "c"), ("neu", "new", "c")]}
  splits = prepare.assemble(domains, args, collections.Counter())
  assert splits["train_terms"] == []  # Both terms' sources were claimed before.
  held = [row for split in HELD_OUT for row in splits[split]]
  assert [row[0] for row in held] == ["Das ist gut."]
  assert [row[:2] for row in splits["train"]] == [("Neu", "New")]


# --- TFDS and seqio ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  return ding_tfds.ensure_prepared(ding_tfds.DeEn, str(tmp_path_factory.mktemp("tfds")))


def test_builder_prepares_every_split_in_file_order(prepared, shipped):
  assert prepared.name == "de_en"
  for split in SPLITS:
    assert prepared.info.splits[split].num_examples == len(shipped[split])
  read = [(x["de"].decode(), x["en"].decode())
          for x in prepared.as_dataset(split="test_software").take(5).as_numpy_iterator()]
  assert read == shipped["test_software"][:5]


def test_seqio_task_gives_token_ids_and_text(prepared, shipped):
  import seqio  # pylint: disable=g-import-not-at-top
  from rest_jax.data import tasks  # pylint: disable=g-import-not-at-top
  seqio.set_tfds_data_dir_override(prepared.data_dir.rsplit("/de_en", 1)[0])
  try:
    task = seqio.get_mixture_or_task(tasks.DE_EN_TASK)
    assert set(task.splits) == set(SPLITS)
    example = next(task.get_dataset(None, split="test_dict", shuffle=False).as_numpy_iterator())
  finally:
    seqio.set_tfds_data_dir_override(None)
  assert example["inputs_pretokenized"].decode() == shipped["test_dict"][0][0]
  assert example["targets"][-1] == 1  # EOS
