r"""Trains the joint German+English SentencePiece model shipped with the Ding corpus.

One unigram model covers both languages so that the encoder and decoder share embeddings. Ids
follow seqio's convention (pad 0, EOS 1, UNK 2, no BOS), which is what `seqio.Feature(add_eos=True)`
and the rest of rest_jax assume. Training is single-threaded over every sentence in file order,
so the same corpus gives a byte-identical model.

  python scripts/train_vocab.py                                  # rest_jax/data/ding/spm_4k.model
  python scripts/train_vocab.py --vocab_size=8000 --model_prefix=/tmp/spm_8k
  python scripts/train_vocab.py --train_path=~/rest_jax_data/iwslt14_de_en/train.tsv \
      --vocab_size=32000 --model_prefix=$HOME/rest_jax_vocab/iwslt14_32k

The script also writes the SentencePiece token statistics of every split into the corpus
README (between the vocab-stats markers that scripts/prepare_ding.py leaves there).
"""
import argparse
import gzip
import io
import os
import statistics
import sys

import sentencepiece as spm

DATA_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "rest_jax", "data"))
DING_DIR = os.path.join(DATA_DIR, "ding")
# The shipped corpora: their folder, the files the model is trained on, the splits reported
# and the default vocabulary size.
CORPORA = {
    "ding": dict(train=("train",), splits=("train", "validation", "test"), vocab_size=4000),
    "de_en": dict(train=("train", "train_terms"),
                  splits=("train", "train_terms", "validation", "test_dict", "test_software"),
                  vocab_size=8000),
}
VOCAB_STATS_BEGIN = "<!-- BEGIN vocab stats (written by scripts/train_vocab.py) -->"
VOCAB_STATS_END = "<!-- END vocab stats -->"
PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, -1


def read_pairs(path: str) -> list[tuple[str, str]]:
  """source<TAB>reference pairs of a plain or .gz file, skipping lines without exactly one tab."""
  opener = gzip.open if path.endswith(".gz") else open
  pairs, skipped = [], 0
  with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    for line in f:
      fields = line.rstrip("\r\n").split("\t")
      if len(fields) == 2 and fields[0].strip() and fields[1].strip():
        pairs.append((fields[0].strip(), fields[1].strip()))
      else:
        skipped += 1
  if skipped:
    print(f"{path}: skipped {skipped} malformed lines")
  return pairs


def train(sentences: list[str], vocab_size: int, input_sentence_size: int = 0) -> bytes:
  """Trains a unigram model with seqio's special ids and returns the serialized model.

  Training from an iterator into memory keeps temporary paths out of the model proto, so the
  same corpus gives the same bytes.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      model_type="unigram",
      vocab_size=vocab_size,
      pad_id=PAD_ID,
      eos_id=EOS_ID,
      unk_id=UNK_ID,
      bos_id=BOS_ID,
      character_coverage=1.0,
      normalization_rule_name="nmt_nfkc",
      input_sentence_size=input_sentence_size,
      shuffle_input_sentence=input_sentence_size > 0,
      num_threads=1,
      minloglevel=2,
  )
  return model.getvalue()


def write_model(model: bytes, prefix: str) -> None:
  """Writes <prefix>.model and a human-readable <prefix>.vocab (piece<TAB>score)."""
  with open(prefix + ".model", "wb") as f:
    f.write(model)
  processor = spm.SentencePieceProcessor(model_proto=model)
  with open(prefix + ".vocab", "w", encoding="utf-8") as f:
    for piece_id in range(processor.get_piece_size()):
      f.write(f"{processor.id_to_piece(piece_id)}\t{processor.get_score(piece_id):g}\n")


def token_statistics(model_path: str, corpus: str = "ding") -> str:
  """Markdown table of SentencePiece token counts per split (EOS not counted)."""
  processor = spm.SentencePieceProcessor(model_file=model_path)
  lines = [
      f"SentencePiece model `{os.path.basename(model_path)}`: {processor.get_piece_size()} pieces, "
      f"pad={processor.pad_id()} eos={processor.eos_id()} unk={processor.unk_id()} "
      f"bos={processor.bos_id()}.", "",
      "| split | German tokens | English tokens | German tokens/sentence mean / p95 / max | "
      "English tokens/sentence mean / p95 / max | sentences with UNK |",
      "|---|---|---|---|---|---|"]
  for split in CORPORA[corpus]["splits"]:
    pairs = read_pairs(os.path.join(DATA_DIR, corpus, f"{split}.tsv.gz"))
    de = processor.encode([source for source, _ in pairs])
    en = processor.encode([reference for _, reference in pairs])
    with_unk = sum(processor.unk_id() in ids for ids in de + en)
    lines.append(f"| {split} | {sum(map(len, de))} | {sum(map(len, en))} | {_summary(de)} | "
                 f"{_summary(en)} | {with_unk} |")
  return "\n".join(lines)


def _summary(sequences) -> str:
  lengths = sorted(len(ids) for ids in sequences)
  p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]
  return f"{statistics.mean(lengths):.1f} / {p95} / {lengths[-1]}"


def update_readme(readme_path: str, block: str) -> bool:
  """Replaces the vocab-stats block of the corpus README; False if the markers are missing."""
  if not os.path.exists(readme_path):
    return False
  with open(readme_path, encoding="utf-8") as f:
    text = f.read()
  begin, end = text.find(VOCAB_STATS_BEGIN), text.find(VOCAB_STATS_END)
  if begin < 0 or end < begin:
    return False
  text = text[:begin + len(VOCAB_STATS_BEGIN)] + "\n" + block + "\n" + text[end:]
  with open(readme_path, "w", encoding="utf-8") as f:
    f.write(text)
  return True


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--corpus", choices=sorted(CORPORA), default="ding",
                      help="the shipped corpus to train on (rest_jax/data/<corpus>)")
  parser.add_argument("--vocab_size", type=int, default=None,
                      help="default: 4000 for ding, 8000 for de_en")
  parser.add_argument("--train_path", type=os.path.expanduser, default=None,
                      help="train on this source<TAB>reference .tsv.gz (both sides) instead of "
                      "the shipped corpus")
  parser.add_argument("--input_sentence_size", type=int, default=0,
                      help="train on a sample of this many sentences (0: all; for large corpora)")
  parser.add_argument("--model_prefix", default=None,
                      help="output prefix; default rest_jax/data/<corpus>/spm_<vocab_size/1000>k")
  parser.add_argument("--stats_only", action="store_true",
                      help="do not train: write the existing model's token statistics")
  parser.add_argument("--no_readme", action="store_true",
                      help="do not write token statistics into rest_jax/data/<corpus>/README.md")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  corpus = CORPORA[args.corpus]
  vocab_size = args.vocab_size or corpus["vocab_size"]
  if vocab_size < 100:
    raise ValueError(f"--vocab_size={vocab_size}: must be at least 100")
  corpus_dir = os.path.join(DATA_DIR, args.corpus)
  prefix = args.model_prefix or os.path.join(corpus_dir, f"spm_{vocab_size // 1000}k")
  paths = [args.train_path] if args.train_path else [
      os.path.join(corpus_dir, f"{split}.tsv.gz") for split in corpus["train"]]
  pairs = [] if args.stats_only else [pair for path in paths for pair in read_pairs(path)]
  if not pairs and not args.stats_only:
    raise ValueError(f"--train_path={args.train_path}: no source<TAB>reference pairs found")
  if not args.stats_only:
    sentences = [side for pair in pairs for side in pair]
    if args.input_sentence_size:
      spm.set_random_generator_seed(0)
    write_model(train(sentences, vocab_size, args.input_sentence_size), prefix)
    print(f"wrote {prefix}.model and {prefix}.vocab from {len(sentences)} sentences")
  if args.train_path is None:
    block = token_statistics(prefix + ".model", args.corpus)
    print(block)
    if not args.no_readme and args.model_prefix is None:
      written = update_readme(os.path.join(corpus_dir, "README.md"), block)
      print("README statistics updated" if written else "README has no vocab-stats markers")


if __name__ == "__main__":
  main(sys.argv[1:])
