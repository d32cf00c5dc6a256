r"""Builds the shipped German->English corpus `de_en` from packages of the registries.

Two domains, each with its own test set, from sources that install offline:

  dict       Ding (Debian `dict-de-en`) and FreeDict (`dict-freedict-deu-eng`): the example
             sentences with human translations (validation / test_dict come from these), and
             every word and phrase entry as extra training pairs ("terms", train only)
  software   human translations of program messages: the German gettext catalogs (English
             msgid, German msgstr) of Debian packages and of PyPI wheels (validation /
             test_software); ISO code lists (country, language, currency names) count as terms

Django's catalogs are kept out of every split: they become `external/django.tsv.gz`, a test
set of software messages the corpus never saw (score a policy on it with
`python -m rest_jax.evaluate_policy`).

Every package is fetched at the version pinned in SOURCES (`apt-get download pkg=version`,
`pip download --no-deps pkg==version`), so the same command writes byte-identical files:

  python scripts/prepare_de_en.py                  # rest_jax/data/de_en/*.tsv.gz + README.md
  python scripts/train_vocab.py --corpus=de_en     # spm_8k.model from train.tsv.gz

A pair is cleaned (NFC, one space between words, menu accelerators `_File`/`&File`/`~File`
removed) and dropped when it still carries format strings (`%s`, `{0}`, `$VAR`), markup
(`<b>`, `&amp;`), line breaks, paths, command-line options or URLs, when both sides are equal,
or when the lengths disagree. The split comes from a hash of the *normalised* German source
(case-folded, letters and digits only), so a source string is in one split only, whatever its
case, punctuation or accelerators; each normalised source keeps one translation (the first in
source order) and sources of the validation and test sets are removed from training.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT_DIR = os.path.normpath(os.path.join(SCRIPTS_DIR, "..", "rest_jax", "data",
                                                   "de_en"))
SPLITS = ("train", "train_terms", "validation", "test_dict", "test_software")
DOMAINS = ("sentences", "terms", "software")


def _load_prepare_ding():
  """prepare_ding.py's dictd reader and sentence rules, shared rather than copied."""
  spec = importlib.util.spec_from_file_location(
      "prepare_ding", os.path.join(SCRIPTS_DIR, "prepare_ding.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ding = _load_prepare_ding()

# (kind, name, version, licence): every source, pinned.
DEBIAN_DICTIONARIES = (
    ("dict-de-en", "1.9-6", "GPL-2+"),
    ("dict-freedict-deu-eng", "2022.04.21-1", "GPL-3+ / AGPL-3+"),
)
# Debian packages whose German gettext catalogs are used: those a base Debian 12 image carries,
# and LibreOffice's German translations.
DEBIAN_CATALOGS = (
    ("adduser", "3.134"), ("appstream", "0.16.1-2+b1"), ("apt", "2.6.2"),
    ("at-spi2-common", "2.46.0-5"), ("bash", "5.2.15-2+b13"), ("binutils-common", "2.40-2"),
    ("coreutils", "9.1-1"), ("diffutils", "1:3.8-4"), ("dpkg", "1.21.23"),
    ("findutils", "4.9.0-4"), ("gettext", "0.21-12"), ("gettext-base", "0.21-12"),
    ("git", "1:2.39.5-0+deb12u3"), ("gnupg-l10n", "2.2.40-1.1+deb12u2"), ("grep", "3.8-5"),
    ("gsettings-desktop-schemas", "43.0-1"), ("iso-codes", "4.15.0-1"),
    ("krb5-locales", "1.20.1-2+deb12u5"), ("libapt-pkg6.0", "2.6.2"),
    ("libavahi-common-data", "0.8-10+deb12u1"), ("libc-l10n", "2.36-9+deb12u14"),
    ("libdpkg-perl", "1.21.23"), ("libelf1", "0.188-2.1"),
    ("libgdk-pixbuf2.0-common", "2.42.10+dfsg-1+deb12u4"),
    ("libglib2.0-data", "2.74.6-2+deb12u9"), ("libgnutls30", "3.7.9-2+deb12u7"),
    ("libgstreamer1.0-0", "1.22.0-2+deb12u1"), ("libgtk2.0-common", "2.24.33-2+deb12u1"),
    ("libidn2-0", "2.3.3-1+b1"), ("libpam-runtime", "1.5.2-6+deb12u3"),
    ("libpq5", "15.20-0+deb12u1"), ("login", "1:4.13+dfsg1-1+deb12u2"), ("make", "4.3-4.1"),
    ("man-db", "2.11.2-2"), ("net-tools", "2.10-0.1+deb12u2"),
    ("packagekit", "1.2.6-5+deb12u1"), ("polkitd", "122-3"),
    ("postgresql-15", "15.20-0+deb12u1"), ("postgresql-client-15", "15.20-0+deb12u1"),
    ("procps", "2:4.0.2-3"), ("psmisc", "23.6-1"), ("python-apt-common", "2.6.0"),
    ("sed", "4.9-1+deb12u1"), ("shared-mime-info", "2.2-1"),
    ("software-properties-common", "0.99.30-4.1~deb12u1"), ("systemd", "252.39-1~deb12u2"),
    ("tar", "1.34+dfsg-1.2+deb12u1"), ("wget", "1.21.3-1+deb12u1"), ("xdg-user-dirs", "0.18-1"),
    ("xkb-data", "2.35.1-1"), ("xz-utils", "5.4.1-1+deb12u2"),
    ("libreoffice-l10n-de", "4:7.4.7-1+deb12u14"),
)
PYPI_CATALOGS = (("Sphinx", "7.4.7", "BSD-2-Clause"),)
EXTERNAL_CATALOGS = (("Django", "4.2.16", "BSD-3-Clause"),)
# Catalogs that are name lists (countries, languages, scripts, currencies): terms, not messages.
TERM_CATALOGS = re.compile(r"^iso_")

_ACCELERATOR = re.compile(r"(?<![\w&~_])[_&~](?=\w)")
_GERMAN_ACCELERATOR_SUFFIX = re.compile(r"\s*\(_\w\)$")
_NOISE = re.compile(
    r"%[-+ #0-9.*]*[a-zA-Z(]|%\d|\{[^{}]*\}|\$[\w({]|<[^<>]*>|&\w+;|[\\\n\r\t\x00\x04]|"
    r"https?:|www\.|\S+@\S+\.\w|(^|\s)--?\w|/\w+/|\w+\.(so|conf|txt|py|c|h|html|mo)\b|"
    r"\b[A-Z_]{2,}[A-Z0-9_]*_[A-Z0-9_]+\b|\|")
_TRAILING_ELLIPSIS = re.compile(r"\s*(\.\.\.|…)$")
_LETTER = re.compile(r"[^\W\d_]")


def normalize_source(text: str) -> str:
  """The key that decides the split: case-folded letters and digits, one space between words."""
  text = unicodedata.normalize("NFKC", text).casefold()
  return " ".join(re.sub(r"[^\w]+", " ", text).split())


def split_of(text: str, fractions: tuple[float, float], test_split: str) -> str:
  """'validation', `test_split` or 'train', from the normalised source's hash."""
  position = ding.split_hash(normalize_source(text)) / float(1 << 64)
  if position < fractions[0]:
    return "validation"
  if position < fractions[0] + fractions[1]:
    return test_split
  return "train"


# --------------------------------------------------------------------------------- gettext
def read_mo(data: bytes) -> list[tuple[str, str]]:
  """(msgid, msgstr) of a compiled gettext catalog, header excluded, in file order.

  Contexts (`ctxt\\x04msgid`) are dropped; plural entries give their singular forms.
  """
  if len(data) < 20:
    raise ValueError("not a gettext .mo file: shorter than its header")
  magic = struct.unpack("<I", data[:4])[0]
  order = {0x950412DE: "<", 0xDE120495: ">"}.get(magic)
  if order is None:
    raise ValueError(f"not a gettext .mo file: magic {magic:#x}")
  _, count, originals, translations = struct.unpack(order + "4I", data[4:20])

  def string(table: int, i: int) -> bytes:
    length, offset = struct.unpack(order + "2I", data[table + 8 * i:table + 8 * i + 8])
    if offset + length > len(data):
      raise ValueError(f"corrupt .mo file: string {i} runs past the end")
    return data[offset:offset + length]

  raw = [(string(originals, i), string(translations, i)) for i in range(count)]
  charset = "utf-8"
  for msgid, msgstr in raw:
    if msgid == b"":
      match = re.search(rb"charset=([-\w]+)", msgstr)
      if match and match.group(1).lower() != b"charset":
        charset = match.group(1).decode("ascii")
  pairs = []
  for msgid, msgstr in raw:
    if not msgid or not msgstr:
      continue
    english = msgid.decode(charset, "replace").split("\x04")[-1].split("\x00")[0]
    german = msgstr.decode(charset, "replace").split("\x00")[0]
    pairs.append((english, german))
  return pairs


def clean_message(text: str) -> str | None:
  """A software message as plain text, or None when it carries format or markup noise."""
  text = unicodedata.normalize("NFC", text)
  text = _TRAILING_ELLIPSIS.sub("", _GERMAN_ACCELERATOR_SUFFIX.sub("", text.strip()))
  if _NOISE.search(text):
    return None
  text = _ACCELERATOR.sub("", text).replace("&&", "&")
  text = ding.normalize_text(text).rstrip(":").strip()
  if not _LETTER.search(text) or text.upper() == text or any(
      unicodedata.category(c) in ("Cc", "Cf", "Co") for c in text):
    return None
  return text


def acceptable_lengths(german: str, english: str, max_words: int, max_ratio: float) -> bool:
  de, en = len(german.split()), len(english.split())
  if max(de, en) > max_words:
    return False
  return max(de, en) <= max_ratio * min(de, en) + 2


# --------------------------------------------------------------------------------- dictionaries
def ding_pairs(entries, args) -> tuple[list, list]:
  """(sentences, terms) from the Ding entries; terms are words and phrases without markup."""
  sentences, terms = [], []
  for headword, translation in entries:
    pair = ding.extract_pair(headword, translation, args)
    if pair is not None:
      sentences.append(pair)
      continue
    term = dictionary_term(headword, translation)
    if term is not None:
      terms.append(term)
  return sentences, terms


def dictionary_term(headword: str, translation: str) -> tuple[str, str] | None:
  """(German, English) of a word or phrase entry: first clean alternative, notes removed."""
  german = ding.strip_notes(headword)
  if not german or ding._LEFTOVER_MARKUP.search(german) or ding._PLACEHOLDERS.search(german):
    return None
  for alternative in ding.split_alternatives(translation):
    english = ding.strip_notes(alternative)
    if (english and english != german and not ding._LEFTOVER_MARKUP.search(english)
        and not ding._PLACEHOLDERS.search(english) and len(english.split()) <= 12
        and len(german.split()) <= 12):
      return german, english
  return None


_FREEDICT_EXAMPLE = re.compile(r'^\s+"(?P<de>[^"]+)"\s+-\s+(?P<en>.+?)\s*$')
_FREEDICT_HEADWORD = re.compile(r"^(?P<de>[^\s/<(][^/<(]*?)\s*(/[^/]*/)?\s*(\([^)]*\))?\s*<[^>]*>$")


def freedict_pairs(dict_path: str, args) -> tuple[list, list]:
  """(sentences, terms) of the FreeDict dictd text: quoted examples and headword entries."""
  with gzip.open(dict_path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  sentences, terms = [], []
  for i, line in enumerate(lines):
    example = _FREEDICT_EXAMPLE.match(line)
    if example:
      german, english = ding.normalize_text(example["de"]), ding.strip_notes(example["en"])
      if ding.is_sentence(german, args.min_source_words, args.max_words) and ding.is_sentence(
          english, args.min_target_words, args.max_words):
        sentences.append((german, english))
      continue
    head = _FREEDICT_HEADWORD.match(line)
    if head and i + 1 < len(lines) and lines[i + 1] and not lines[i + 1].startswith(" "):
      english = re.sub(r"\s*<[^>]*>", "", lines[i + 1]).split(",")[0]
      term = dictionary_term(head["de"], english)
      if term is not None:
        terms.append(term)
  return sentences, terms


# --------------------------------------------------------------------------------- fetching
def fetch_debian(name: str, version: str, cache_dir: str) -> str:
  """Unpacks `name=version` (apt-get download, dpkg -x) under cache_dir; returns its root."""
  root = os.path.join(cache_dir, "debian", f"{name}_{version}".replace(":", "%3a"))
  if not os.path.isdir(root):
    download = os.path.join(cache_dir, "debs")
    os.makedirs(download, exist_ok=True)
    before = set(os.listdir(download))
    result = subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=download,
                            capture_output=True, text=True)
    if result.returncode:
      raise RuntimeError(f"apt-get download {name}={version} failed ({result.stderr.strip()}); "
                         "run `apt-get update`, or update the pinned version in SOURCES")
    debs = sorted(set(os.listdir(download)) - before) or glob.glob(
        os.path.join(download, f"{name}_*.deb"))
    os.makedirs(os.path.dirname(root), exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", os.path.join(download, debs[0]), root + ".tmp"],
                   check=True)
    os.rename(root + ".tmp", root)
  return root


def debian_copyright(root: str, name: str) -> tuple[str, str]:
  """(the licence names its copyright file declares, the whole file) of a package."""
  paths = sorted(glob.glob(os.path.join(root, "usr", "share", "doc", "*", "copyright")))
  if not paths:
    return "see the Debian package's copyright file", ""
  own = [p for p in paths if os.path.basename(os.path.dirname(p)) == name]
  with open((own or paths)[0], encoding="utf-8", errors="replace") as f:
    text = f.read()
  names = []
  for name_ in re.findall(r"^License:[ \t]*(\S[^\n]*)$", text, re.M):
    if len(name_) <= 40 and name_ not in names:  # Short names, not inline licence prose.
      names.append(name_.strip())
  return (", ".join(names) if names else "see COPYRIGHTS.txt.gz"), text


def fetch_wheel(name: str, version: str, cache_dir: str) -> str:
  download = os.path.join(cache_dir, "wheels")
  os.makedirs(download, exist_ok=True)
  find = lambda: [path for path in glob.glob(os.path.join(download, "*.whl"))
                  if os.path.basename(path).lower().startswith(f"{name.lower()}-{version}-")]
  wheels = find()
  if not wheels:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "-d", download, f"{name}=={version}"], check=True)
    wheels = find()
  if len(wheels) != 1:
    raise FileNotFoundError(f"expected one {name}-{version} wheel in {download}: {wheels}")
  return wheels[0]


def debian_catalogs(root: str) -> list[tuple[str, bytes]]:
  """(catalog name, .mo bytes) of the German catalogs in an unpacked package, sorted by path."""
  paths = sorted(glob.glob(os.path.join(root, "usr", "share", "locale", "de", "LC_MESSAGES",
                                        "*.mo"))
                 + glob.glob(os.path.join(root, "usr", "lib", "libreoffice", "program",
                                          "resource", "de", "LC_MESSAGES", "*.mo")))
  out = []
  for path in paths:
    with open(path, "rb") as f:
      out.append((os.path.basename(path)[:-3], f.read()))
  return out


def wheel_catalogs(wheel: str) -> list[tuple[str, bytes]]:
  with zipfile.ZipFile(wheel) as archive:
    names = sorted(n for n in archive.namelist()
                   if re.search(r"/locale/de/LC_MESSAGES/[^/]+\.mo$", n))
    return [(name, archive.read(name)) for name in names]


# --------------------------------------------------------------------------------- assembly
def software_pairs(catalogs, args, counts, origin: str) -> tuple[list, list]:
  """(messages, terms) as (German, English) pairs from (name, .mo bytes) catalogs."""
  messages, terms = [], []
  for name, data in catalogs:
    for english, german in read_mo(data):
      counts[f"{origin} catalog entries"] += 1
      english, german = clean_message(english), clean_message(german)
      if english is None or german is None:
        counts[f"{origin} dropped: format, markup or no text"] += 1
        continue
      if english == german or not acceptable_lengths(german, english, args.max_words,
                                                     args.max_length_ratio):
        counts[f"{origin} dropped: equal sides or lengths disagree"] += 1
        continue
      (terms if TERM_CATALOGS.match(os.path.basename(name)) else messages).append(
          (german, english))
  return messages, terms


def assemble(domains: dict[str, list], args, counts) -> dict[str, list]:
  """Dedups on the normalised source and splits it.

  The domains with held-out sets come first, so a normalised source claimed by a validation or
  test set is dropped wherever it appears again (terms included): it never reaches train.
  """
  fractions = {"sentences": (args.validation_fraction, args.test_fraction, "test_dict"),
               "software": (args.software_validation_fraction, args.software_test_fraction,
                            "test_software"),
               "terms": (0.0, 0.0, "train_terms")}
  splits = {split: [] for split in SPLITS}
  seen: dict[str, str] = {}
  for domain in ("sentences", "software", "terms"):  # Held-out domains claim sources first.
    validation, test, test_split = fractions[domain]
    for german, english, origin in domains[domain]:
      key = normalize_source(german)
      if not key:
        continue
      split = split_of(german, (validation, test), test_split)
      if split == "train" and domain == "terms":
        split = "train_terms"
      if key in seen:
        counts[f"{domain} dropped: normalised source seen before"] += 1
        continue
      seen[key] = split
      splits[split].append((german, english, origin))
      counts[f"{domain} {split}"] += 1
  for split in SPLITS:
    splits[split].sort(key=lambda row: (ding.split_hash(normalize_source(row[0])), row))
  return splits


def external_pairs(catalogs, args, counts, seen_keys: set) -> list:
  messages, _ = software_pairs(catalogs, args, counts, "django")
  out, keys = [], set()
  for german, english in messages:
    key = normalize_source(german)
    if key in keys:
      continue
    keys.add(key)
    if key in seen_keys:
      counts["django dropped: source also in the corpus"] += 1
      continue
    out.append((german, english))
  out.sort(key=lambda pair: (ding.split_hash(normalize_source(pair[0])), pair))
  return out


def sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR)
  parser.add_argument("--cache_dir", default=None,
                      help="where downloaded packages are kept (default: a temporary folder)")
  parser.add_argument("--min_source_words", type=int, default=3)
  parser.add_argument("--min_target_words", type=int, default=2)
  parser.add_argument("--max_words", type=int, default=40)
  parser.add_argument("--max_length_ratio", type=float, default=3.0)
  parser.add_argument("--validation_fraction", type=float, default=0.035)
  parser.add_argument("--test_fraction", type=float, default=0.065)
  parser.add_argument("--software_validation_fraction", type=float, default=0.02)
  parser.add_argument("--software_test_fraction", type=float, default=0.03)
  return parser.parse_args(argv)


def collect(args, cache_dir: str, counts) -> tuple[dict, list, list, list]:
  """Reads every source: (domains, Django catalogs, manifest rows, Debian copyright files)."""
  domains = {domain: [] for domain in DOMAINS}
  manifest, copyrights = [], []
  for name, version, licence in DEBIAN_DICTIONARIES:
    root = fetch_debian(name, version, cache_dir)
    copyrights.append((name, version, debian_copyright(root, name)[1]))
    manifest.append({"source": name, "version": version, "kind": "debian", "licence": licence})
    dictd = os.path.join(root, "usr", "share", "dictd")
    if name == "dict-de-en":
      path = os.path.join(dictd, "german-english.dict.dz")
      entries = ding.read_dictd_entries(path, path.replace(".dict.dz", ".index"))
      sentences, terms = ding_pairs(entries, args)
    else:
      sentences, terms = freedict_pairs(os.path.join(dictd, "freedict-deu-eng.dict.dz"), args)
    counts[f"{name} sentence pairs"], counts[f"{name} term pairs"] = len(sentences), len(terms)
    domains["sentences"] += [(g, e, name) for g, e in sentences]
    domains["terms"] += [(g, e, name) for g, e in terms]
  for name, version in DEBIAN_CATALOGS:
    root = fetch_debian(name, version, cache_dir)
    catalogs = debian_catalogs(root)
    licence, copyright_text = debian_copyright(root, name)
    copyrights.append((name, version, copyright_text))
    manifest.append({"source": name, "version": version, "kind": "debian",
                     "licence": licence, "catalogs": [c for c, _ in catalogs]})
    messages, terms = software_pairs(catalogs, args, counts, "debian")
    domains["software"] += [(g, e, name) for g, e in messages]
    domains["terms"] += [(g, e, name) for g, e in terms]
  for name, version, licence in PYPI_CATALOGS:
    catalogs = wheel_catalogs(fetch_wheel(name, version, cache_dir))
    manifest.append({"source": name, "version": version, "kind": "pypi", "licence": licence,
                     "catalogs": [c for c, _ in catalogs]})
    messages, terms = software_pairs(catalogs, args, counts, "pypi")
    domains["software"] += [(g, e, name) for g, e in messages]
    domains["terms"] += [(g, e, name) for g, e in terms]
  external = []
  for name, version, licence in EXTERNAL_CATALOGS:
    catalogs = wheel_catalogs(fetch_wheel(name, version, cache_dir))
    manifest.append({"source": name, "version": version, "kind": "pypi (external test only)",
                     "licence": licence, "catalogs": len(catalogs)})
    external += catalogs
  return domains, external, manifest, copyrights


def write_copyrights(path: str, copyrights) -> None:
  """The Debian copyright files of every source package, one after the other, gzipped."""
  with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                              compresslevel=9) as f:
    for name, version, text in copyrights:
      f.write(f"{'=' * 78}\n{name} {version}\n{'=' * 78}\n{text}\n".encode("utf-8"))


def origin_table(splits) -> str:
  """Pairs per source and split, in markdown."""
  counts = collections.Counter((row[2], split) for split in SPLITS for row in splits[split])
  origins = sorted({origin for origin, _ in counts}, key=lambda o: -sum(
      counts[o, split] for split in SPLITS))
  lines = ["| source | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
  for origin in origins:
    lines.append(f"| {origin} | " + " | ".join(str(counts[origin, s]) for s in SPLITS) + " |")
  lines.append("| all | " + " | ".join(str(len(splits[s])) for s in SPLITS) + " |")
  return "\n".join(lines)


def word_statistics(splits) -> str:
  lines = ["| split | pairs | German words/pair mean / median / p95 / range | English words/pair |",
           "|---|---:|---|---|"]
  for split in SPLITS:
    de = [len(row[0].split()) for row in splits[split]]
    en = [len(row[1].split()) for row in splits[split]]
    lines.append(f"| {split} | {len(de)} | {ding.length_summary(de)} | "
                 f"{ding.length_summary(en)} |")
  return "\n".join(lines)


def licence_table(manifest) -> str:
  lines = ["| source | version | from | licences its copyright file names |", "|---|---|---|---|"]
  for row in manifest:
    lines.append(f"| {row['source']} | {row['version']} | {row['kind']} | {row['licence']} |")
  return "\n".join(lines)


def readme_markdown(splits, external, manifest, counts, args, vocab_block: str,
                    sizes: dict[str, int]) -> str:
  count_lines = "\n".join(f"| {key} | {value} |" for key, value in sorted(counts.items()))
  size_lines = "\n".join(f"| `{name}` | {size / 1e6:.2f} MB |" for name, size in sizes.items())
  return f"""# `de_en`: German->English dictionary and software-message corpus

The corpus of the translation showcase. It is made from packages of the registries with
`scripts/prepare_de_en.py` (pinned versions, byte-identical output), and ships with rest_jax,
so every run works offline. Each `.tsv.gz` line is `German<TAB>English`, UTF-8, NFC.

| split | what | used for |
|---|---|---|
| `train` | dictionary example sentences (Ding, FreeDict) and software messages (gettext) | BC, Grow sources, Improve's original data |
| `train_terms` | dictionary words and phrases (Ding, FreeDict) and ISO code names | BC only (`DataConfig.bc_extra_splits`) |
| `validation` | both domains, hash-mixed | checkpoint selection, early stopping |
| `test_dict` | dictionary example sentences | test, domain 1 |
| `test_software` | software messages | test, domain 2 |
| `external/django.tsv.gz` | Django's German catalogs, in no split | an external test (`python -m rest_jax.evaluate_policy`) |

A split is decided by the hash of the German source after normalisation (NFKC, case-folded,
letters and digits only), so no source string is in two splits in any spelling; each normalised
source keeps one translation (the first in source order), and sources held out by a validation or
test set are dropped from `train` and `train_terms` wherever they appear again. Django pairs
whose source is anywhere in the corpus are dropped from the external test.

## Pairs per source and split

{origin_table(splits)}

External test: {len(external)} Django pairs.

## Sources and licences

The data keep the licences of their sources; the rest of rest_jax is Apache-2.0.
`COPYRIGHTS.txt.gz` holds the Debian copyright file of every source package (with the full
licence texts or their references); FreeDict's is GPL-3+ for the dictionary compiled by its
authors and AGPL-3+ for parts of its tooling, Ding's GPL-2+.

{licence_table(manifest)}

## How the files were made

```
python scripts/prepare_de_en.py                  # apt-get download / pip download, no root
python scripts/train_vocab.py --corpus=de_en     # spm_8k.model, statistics below
```

Dictionary sentences follow `scripts/prepare_ding.py`'s rules (a German sentence of at least
{args.min_source_words} words with a sentence as translation); dictionary terms are the other
entries whose German and first clean English alternative carry no markup or placeholders
(`jdm.`, `sth.`), at most 12 words each. Software messages are the msgid (English) and msgstr
(German) of each catalog entry (plural entries: their singular), cleaned: menu accelerators
(`_File`, `&File`, `~File`, `(_D)`) and trailing ellipses removed; pairs dropped when a side
still has format strings (`%s`, `%(name)s`, `{{0}}`, `$VAR`, `$(ARG1)`), markup or entities,
line breaks, tabs or backslashes, paths, command-line options, URLs or e-mail addresses, is all
capitals, or has no letter; when both sides are equal; when a side has more than {args.max_words}
words or one side is more than {args.max_length_ratio:g} times (+2) as long as the other. Split
fractions: dictionary sentences {args.validation_fraction:g} validation / {args.test_fraction:g}
test; software messages {args.software_validation_fraction:g} / {args.software_test_fraction:g}.
`manifest.json` records every source, its catalogs, the counts below and the SHA-256 of each file.

| step | count |
|---|---:|
{count_lines}

## Size

| file | size |
|---|---:|
{size_lines}

## Statistics

Words are whitespace-separated tokens.

{word_statistics(splits)}

{ding.VOCAB_STATS_BEGIN}
{vocab_block}
{ding.VOCAB_STATS_END}
"""


def main(argv=None) -> None:
  args = parse_args(argv)
  counts = collections.Counter()
  with tempfile.TemporaryDirectory() as tmp:
    domains, django_catalogs, manifest, copyrights = collect(args, args.cache_dir or tmp,
                                                             counts)
    splits = assemble(domains, args, counts)
    seen = {normalize_source(row[0]) for rows in splits.values() for row in rows}
    external = external_pairs(django_catalogs, args, counts, seen)
  os.makedirs(os.path.join(args.output_dir, "external"), exist_ok=True)
  for split in SPLITS:
    ding.write_tsv_gz(os.path.join(args.output_dir, f"{split}.tsv.gz"),
                      [row[:2] for row in splits[split]])
  ding.write_tsv_gz(os.path.join(args.output_dir, "external", "django.tsv.gz"), external)
  write_copyrights(os.path.join(args.output_dir, "COPYRIGHTS.txt.gz"), copyrights)
  files = {name: sha256(os.path.join(args.output_dir, name))
           for name in [f"{s}.tsv.gz" for s in SPLITS] + ["external/django.tsv.gz"]}
  summary = {"sources": manifest, "counts": dict(sorted(counts.items())),
             "pairs": {split: len(pairs) for split, pairs in splits.items()},
             "external_django": len(external), "sha256": files}
  with open(os.path.join(args.output_dir, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1, ensure_ascii=False, sort_keys=True)
    f.write("\n")
  readme_path = os.path.join(args.output_dir, "README.md")
  names = [f"{s}.tsv.gz" for s in SPLITS] + ["external/django.tsv.gz", "COPYRIGHTS.txt.gz"]
  sizes = {name: os.path.getsize(os.path.join(args.output_dir, name)) for name in names}
  with open(readme_path, "w", encoding="utf-8") as f:
    f.write(readme_markdown(splits, external, manifest, counts, args,
                            ding.existing_vocab_block(readme_path), sizes))
  print(json.dumps({k: summary[k] for k in ("pairs", "external_django")}))
  for key, value in sorted(counts.items()):
    print(f"{key}: {value}")


if __name__ == "__main__":
  main(sys.argv[1:])
