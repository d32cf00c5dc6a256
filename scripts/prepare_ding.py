r"""Builds the shipped German->English sentence corpus from the Ding dictionary.

The Ding dictionary (Debian package `dict-de-en`, GPL-2+) contains, besides single words, many
German example sentences with human English translations. They are real, licensed for
redistribution and small enough to ship, which gives rest_jax a translation corpus that works
offline: tests, demos and the tiny end-to-end ReST runs all use it.

The script reads the dictd files (`german-english.index` gives each entry's byte span in the
uncompressed `german-english.dict.dz`; an entry is `headword\n annotations\n   translation`),
keeps entries whose German headword and English translation are both full sentences, cleans
them, de-duplicates them, splits them by a hash of the German source and writes

  rest_jax/data/ding/{train,validation,test}.tsv.gz   source<TAB>reference, UTF-8
  rest_jax/data/ding/README.md                        license, command, statistics
  rest_jax/data/ding/COPYING.ding                     the package's copyright file

Regenerate (either form gives byte-identical output for the same package version):

  python scripts/prepare_ding.py                      # apt-get download + dpkg -x, no root
  python scripts/prepare_ding.py --dict_path=/usr/share/dictd/german-english.dict.dz

then `python scripts/train_vocab.py` for the SentencePiece model and its statistics.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import unicodedata

DEFAULT_OUTPUT_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "rest_jax", "data", "ding"))
SPLITS = ("train", "validation", "test")
VOCAB_STATS_BEGIN = "<!-- BEGIN vocab stats (written by scripts/train_vocab.py) -->"
VOCAB_STATS_END = "<!-- END vocab stats -->"

_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Usage labels and notes the dictionary attaches inside a translation: [Br.], {f}, <Abk.>, (of).
_NOTE_PATTERNS = (r"\[[^\[\]]*\]", r"\{[^{}]*\}", r"<[^<>]*>", r"\([^()]*\)")
# Anything still present after notes are removed means the entry was not plain text.
_LEFTOVER_MARKUP = re.compile(r"[\[\]{}<>()|/;~_*#=@\\\t]|\.\.\.|…")
# Dictionary placeholders ("jdm. etw. geben", "to give sb. sth.") mark phrase patterns.
_PLACEHOLDERS = re.compile(
    r"\b(jd|jdm|jdn|jds|etw|sb|sth|so|sb's|sth's)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"'“”»«’]*$")
_OPENING_QUOTES = "\"'„“”»«‚‘"


def decode_dictd_number(text: str) -> int:
  """dictd index offsets and lengths are base-64 numbers, most significant digit first."""
  value = 0
  for char in text:
    value = value * 64 + _BASE64.index(char)
  return value


def read_dictd_entries(dict_path: str, index_path: str) -> list[tuple[str, str]]:
  """Returns (headword, translation) for every entry, in file order.

  The index lists one line per headword, several of which may point at the same entry, so the
  distinct byte spans are the entries. Translations wrap onto continuation lines, some of them
  at column 0, which is why spans (not line shapes) delimit entries.
  """
  with gzip.open(dict_path, "rb") as f:
    data = f.read()
  spans = set()
  with open(index_path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      fields = line.rstrip("\n").split("\t")
      if len(fields) != 3:
        raise ValueError(f"{index_path}:{line_number}: expected 3 tab-separated fields")
      spans.add((decode_dictd_number(fields[1]), decode_dictd_number(fields[2])))
  entries = []
  for offset, length in sorted(spans):
    lines = data[offset:offset + length].decode("utf-8").rstrip("\n").split("\n")
    headword = lines[0].strip()
    if headword.startswith("00-database") or headword.startswith("00database"):
      continue
    translation = " ".join(line.strip() for line in lines[2:] if line.strip())
    entries.append((headword, translation))
  return entries


def normalize_text(text: str) -> str:
  """NFC, one space between words, no space before closing punctuation."""
  text = unicodedata.normalize("NFC", text)
  text = re.sub(r"\s+", " ", text).strip()
  return re.sub(r" +([,.!?:])", r"\1", text)


def strip_notes(text: str) -> str:
  """Removes bracketed usage labels, grammar notes and optional words."""
  previous = None
  while previous != text:  # Repeat so that nested notes like "(a (b))" go too.
    previous = text
    for pattern in _NOTE_PATTERNS:
      text = re.sub(pattern, " ", text)
  return normalize_text(text)


def split_alternatives(translation: str) -> list[str]:
  """Splits "A; B" into alternatives, ignoring ';' inside brackets."""
  parts, depth, current = [], 0, []
  for char in translation:
    if char in "([{<":
      depth += 1
    elif char in ")]}>":
      depth = max(0, depth - 1)
    if char == ";" and depth == 0:
      parts.append("".join(current))
      current = []
    else:
      current.append(char)
  parts.append("".join(current))
  return [part.strip() for part in parts if part.strip()]


def is_sentence(text: str, min_words: int, max_words: int) -> bool:
  """Capital (or digit) start, final . ! or ?, word count in range, no markup left."""
  words = text.split()
  if not min_words <= len(words) <= max_words:
    return False
  first = text.lstrip(_OPENING_QUOTES)[:1]
  if not first or not (first.isupper() or first.isdigit()):
    return False
  if not _SENTENCE_END.search(text):
    return False
  if _LEFTOVER_MARKUP.search(text) or _PLACEHOLDERS.search(text):
    return False
  return not any(unicodedata.category(char) in ("Cc", "Cf") for char in text)


def extract_pair(headword: str, translation: str, args) -> tuple[str, str] | None:
  """Returns the cleaned (German, English) sentence pair of one entry, or None."""
  german = normalize_text(headword)
  if not is_sentence(german, args.min_source_words, args.max_words):
    return None
  for alternative in split_alternatives(translation):
    english = strip_notes(alternative)
    if english == german or not is_sentence(english, args.min_target_words, args.max_words):
      continue
    source_words, target_words = len(german.split()), len(english.split())
    if max(source_words, target_words) > args.max_length_ratio * min(source_words, target_words):
      continue
    return german, english
  return None


def split_of(german: str, validation_fraction: float, test_fraction: float) -> str:
  """Deterministic split from a hash of the normalised German source."""
  position = split_hash(german) / float(1 << 64)
  if position < validation_fraction:
    return "validation"
  if position < validation_fraction + test_fraction:
    return "test"
  return "train"


def split_hash(german: str) -> int:
  return int.from_bytes(hashlib.sha256(german.encode("utf-8")).digest()[:8], "big")


def build_splits(entries, args) -> tuple[dict[str, list[tuple[str, str]]], collections.Counter]:
  """Filters, de-duplicates (one translation per German source) and splits the entries."""
  counts = collections.Counter(entries=len(entries))
  seen_sources, pairs = set(), []
  for headword, translation in entries:
    pair = extract_pair(headword, translation, args)
    if pair is None:
      continue
    counts["sentence_pairs"] += 1
    if pair[0] in seen_sources:
      counts["duplicate_source"] += 1
      continue
    seen_sources.add(pair[0])
    pairs.append(pair)
  splits = {split: [] for split in SPLITS}
  for pair in pairs:
    splits[split_of(pair[0], args.validation_fraction, args.test_fraction)].append(pair)
  for split in SPLITS:  # A hash order mixes topics; dictionary order clusters them.
    splits[split].sort(key=lambda pair: (split_hash(pair[0]), pair[0]))
  return splits, counts


def write_tsv_gz(path: str, pairs) -> None:
  """Writes source<TAB>reference lines; mtime=0 keeps the bytes reproducible."""
  with open(path, "wb") as raw, gzip.GzipFile(
      filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
    for source, reference in pairs:
      f.write(f"{source}\t{reference}\n".encode("utf-8"))


def length_summary(lengths: list[int]) -> str:
  if not lengths:
    return "-"
  ordered = sorted(lengths)
  p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
  return (f"{statistics.mean(ordered):.1f} / {statistics.median(ordered):g} / {p95} / "
          f"{ordered[0]}-{ordered[-1]}")


def statistics_markdown(splits) -> str:
  """Corpus statistics in whitespace-separated words (SentencePiece counts are added later)."""
  lines = ["| split | pairs | German words | English words | "
           "German words/sentence mean / median / p95 / range | English words/sentence |",
           "|---|---|---|---|---|---|"]
  for split in SPLITS:
    de = [len(source.split()) for source, _ in splits[split]]
    en = [len(reference.split()) for _, reference in splits[split]]
    lines.append(f"| {split} | {len(de)} | {sum(de)} | {sum(en)} | {length_summary(de)} | "
                 f"{length_summary(en)} |")
  buckets = [(3, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 40)]
  all_pairs = [pair for split in SPLITS for pair in splits[split]]
  lines += ["", "Length distribution over all splits (words per sentence):", "",
            "| words | German sentences | English sentences |", "|---|---|---|"]
  for low, high in buckets:
    de = sum(low <= len(s.split()) <= high for s, _ in all_pairs)
    en = sum(low <= len(r.split()) <= high for _, r in all_pairs)
    lines.append(f"| {low}-{high} | {de} | {en} |")
  short_en = sum(len(r.split()) < 3 for _, r in all_pairs)
  lines.append(f"| <3 | 0 | {short_en} |")
  return "\n".join(lines)


def readme_markdown(splits, counts, args, package_version: str, dictionary_header: str,
                    vocab_block: str) -> str:
  total = sum(len(pairs) for pairs in splits.values())
  percent = lambda fraction: f"{100 * fraction:g}%"
  return f"""# Ding German->English sentence pairs

German example sentences with their human English translations, taken from the Ding
German-English dictionary by Frank Richter (TU Chemnitz) as packaged by Debian in
`dict-de-en` version {package_version}. Each line of `{{train,validation,test}}.tsv.gz` is
`German sentence<TAB>English sentence`, UTF-8, NFC.

## License

The dictionary, and therefore these files, are distributed under the GNU General Public License,
version 2 or (at your option) any later version (GPL-2+). `COPYING.ding` is the package's
copyright file. The dictionary data carries this notice:

```
{dictionary_header}
```

The rest of rest_jax is Apache-2.0; this folder keeps its own license.

## How the files were made

```
python scripts/prepare_ding.py          # fetches dict-de-en with apt-get download (no root)
python scripts/prepare_ding.py --dict_path=/usr/share/dictd/german-english.dict.dz
python scripts/train_vocab.py           # spm_4k.model from train.tsv.gz
```

Entries are kept when the German headword is a sentence (capital or digit start, ends in `.`, `!`
or `?`, at least {args.min_source_words} words) and one of the `;`-separated English alternatives,
after removing bracketed notes (`[Br.]`, `{{f}}`, `<Abk.>`, `(optional words)`), is a sentence too
(at least {args.min_target_words} words). Pairs are dropped when markup is left (`/` alternatives,
whose scope is ambiguous, `|`, `...`, placeholders such as `jdm.`/`sth.`), when a side has more
than {args.max_words} words, or when one side has more than {args.max_length_ratio:g} times as many
words as the other. Each German source keeps its first translation in dictionary order. The split
comes from the first 8 bytes of the SHA-256 of the German source
({percent(args.validation_fraction)} validation, {percent(args.test_fraction)} test, the rest
train), so no German source is in two splits, and each split is ordered by that hash.

| step | count |
|---|---|
| dictionary entries | {counts['entries']} |
| sentence pairs after cleaning | {counts['sentence_pairs']} |
| dropped: German source seen before | {counts['duplicate_source']} |
| shipped pairs | {total} |

## Statistics

Words are whitespace-separated tokens.

{statistics_markdown(splits)}

{VOCAB_STATS_BEGIN}
{vocab_block}
{VOCAB_STATS_END}
"""


def existing_vocab_block(readme_path: str) -> str:
  """Keeps the SentencePiece section that train_vocab.py wrote into an earlier README."""
  placeholder = "SentencePiece statistics: run `python scripts/train_vocab.py`."
  if not os.path.exists(readme_path):
    return placeholder
  with open(readme_path, encoding="utf-8") as f:
    text = f.read()
  begin, end = text.find(VOCAB_STATS_BEGIN), text.find(VOCAB_STATS_END)
  if begin < 0 or end < begin:
    return placeholder
  return text[begin + len(VOCAB_STATS_BEGIN):end].strip("\n")


def fetch_package(work_dir: str) -> str:
  """Downloads dict-de-en with apt-get (no root needed) and unpacks it with dpkg -x."""
  subprocess.run(["apt-get", "download", "dict-de-en"], cwd=work_dir, check=True)
  debs = glob.glob(os.path.join(work_dir, "dict-de-en_*.deb"))
  if len(debs) != 1:
    raise FileNotFoundError(f"expected one dict-de-en_*.deb in {work_dir}, found {debs}")
  root = os.path.join(work_dir, "root")
  subprocess.run(["dpkg", "-x", debs[0], root], check=True)
  return os.path.join(root, "usr", "share", "dictd", "german-english.dict.dz")


def find_package_file(dict_path: str, relative: str, explicit: str | None) -> str:
  """Finds a file of the unpacked package relative to .../usr/share/dictd/."""
  path = explicit or os.path.normpath(
      os.path.join(os.path.dirname(dict_path), "..", relative))
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found; pass --copyright_path (the package's "
        "usr/share/doc/dict-de-en/copyright) or use the default apt-get download mode")
  return path


def package_version(copyright_dir: str) -> str:
  """Reads the Debian version from changelog.Debian.gz next to the copyright file."""
  changelog = os.path.join(copyright_dir, "changelog.Debian.gz")
  if not os.path.exists(changelog):
    return "unknown"
  with gzip.open(changelog, "rt", encoding="utf-8") as f:
    match = re.match(r"\S+ \(([^)]+)\)", f.readline())
  return match.group(1) if match else "unknown"


def dictionary_header(entries_path: str) -> str:
  """The original copyright lines that the dictd file carries in its first entry."""
  with gzip.open(entries_path, "rt", encoding="utf-8") as f:
    head = f.read(4000)
  return "\n".join(line for line in head.splitlines() if line.startswith("# "))


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dict_path", help="german-english.dict.dz of an unpacked dict-de-en; "
                      "default: apt-get download the package into a temporary directory")
  parser.add_argument("--copyright_path", help="the package's copyright file; default: found "
                      "next to --dict_path in the unpacked package tree")
  parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR)
  parser.add_argument("--min_source_words", type=int, default=3)
  parser.add_argument("--min_target_words", type=int, default=2)
  parser.add_argument("--max_words", type=int, default=40)
  parser.add_argument("--max_length_ratio", type=float, default=3.0)
  parser.add_argument("--validation_fraction", type=float, default=0.065)
  parser.add_argument("--test_fraction", type=float, default=0.065)
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory() as work_dir:
    dict_path = args.dict_path or fetch_package(work_dir)
    index_path = re.sub(r"\.dict(\.dz)?$", ".index", dict_path)
    if not os.path.exists(index_path):
      raise FileNotFoundError(f"dictd index {index_path} (next to {dict_path}) not found")
    copyright_path = find_package_file(
        dict_path, os.path.join("doc", "dict-de-en", "copyright"), args.copyright_path)
    entries = read_dictd_entries(dict_path, index_path)
    splits, counts = build_splits(entries, args)
    os.makedirs(args.output_dir, exist_ok=True)
    for split in SPLITS:
      write_tsv_gz(os.path.join(args.output_dir, f"{split}.tsv.gz"), splits[split])
    shutil.copyfile(copyright_path, os.path.join(args.output_dir, "COPYING.ding"))
    readme_path = os.path.join(args.output_dir, "README.md")
    readme = readme_markdown(
        splits, counts, args, package_version(os.path.dirname(copyright_path)),
        dictionary_header(dict_path), existing_vocab_block(readme_path))
    with open(readme_path, "w", encoding="utf-8") as f:
      f.write(readme)
  print(dict(counts), {split: len(pairs) for split, pairs in splits.items()})
  print(statistics_markdown(splits))


if __name__ == "__main__":
  main(sys.argv[1:])
