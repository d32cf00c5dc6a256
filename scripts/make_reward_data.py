r"""Makes reward-model training data: hypotheses for training sources, labelled by a metric.

  # bootstrap without any policy: corrupted references, labelled with sentence chrF
  python scripts/make_reward_data.py --policy=random_perturbation --task=ding_de_en \
      --split=train --max_examples=1000 --samples_per_source=4 --output_tsv=/tmp/rm/train.tsv
  # samples of a trained policy (a ReST workdir or checkpoint directory), labelled with BLEU
  python scripts/make_reward_data.py --policy=/work/run --metric=bleu \
      --samples_per_source=8 --temperature=0.8 --output_tsv=/tmp/rm/policy.tsv

Writes source<TAB>hypothesis<TAB>score (--format=regression, scores in [0, 1]) or
source<TAB>chosen<TAB>rejected for every same-source pair whose scores differ by at least
--preference_margin (--format=preference), the two formats of scripts/train_reward_model.py.

random_perturbation corrupts the reference's words with 0..--max_edits random edits (drop a
word, swap two neighbours, replace a word with one from another reference, repeat a word,
truncate the tail), so the labels cover the whole [0, 1] range; --sentence_edit_rate adds
whole-sentence negatives (the reference said twice, the source copied), which word edits never
produce and a reference-free model otherwise cannot learn to punish (see docs/rewards.md).
Run from the repository root with `PYTHONPATH=.` (or after `pip install -e .`).
"""

import argparse
import collections
import random
import sys

import numpy as np

RANDOM_PERTURBATION = "random_perturbation"
EDITS = ("drop", "swap", "replace", "repeat", "truncate")
SENTENCE_EDITS = ("repeat_sentence", "copy_source")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--policy", required=True,
                 help=f"a policy checkpoint directory or '{RANDOM_PERTURBATION}'")
  p.add_argument("--task", default="ding_de_en")
  p.add_argument("--split", default="train")
  p.add_argument("--max_examples", type=int, default=None)
  p.add_argument("--samples_per_source", type=int, default=4)
  p.add_argument("--metric", default="chrf",
                 help="reward spec of the labelling metric, e.g. chrf, bleu, chrf:word_order=2")
  p.add_argument("--format", choices=("regression", "preference"), default="regression")
  p.add_argument("--preference_margin", type=float, default=0.05)
  p.add_argument("--output_tsv", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max_edits", type=int, default=4, help="random_perturbation: most edits")
  p.add_argument("--sentence_edit_rate", type=float, default=0.0,
                 help="random_perturbation: share of hypotheses that are instead the whole "
                      "reference repeated twice or the copied source (negatives that word "
                      "edits never produce)")
  p.add_argument("--temperature", type=float, default=0.8, help="policy sampling temperature")
  p.add_argument("--top_k", type=int, default=0)
  p.add_argument("--max_decode_len", type=int, default=64)
  p.add_argument("--batch_size", type=int, default=32, help="sources per sampling batch")
  p.add_argument("--checkpoint_step", type=int, default=None)
  p.add_argument("--policy_vocab", default=None,
                 help="vocabulary spec of the policy when its checkpoint meta records none")
  return p.parse_args(argv)


# ---------------------------------------------------------------------- random perturbation
def corrupt(words: list[str], edits: int, word_pool: list[str], rng: random.Random) -> list[str]:
  """Applies `edits` random word edits (truncation at most once); never returns no words."""
  words, truncated = list(words), False
  for _ in range(edits):
    choices = [e for e in EDITS if not (e == "truncate" and (truncated or len(words) < 2))
               and not (e in ("drop", "swap") and len(words) < 2)]
    edit = rng.choice(choices)
    i = rng.randrange(len(words))
    if edit == "drop":
      del words[i]
    elif edit == "swap":
      j = i + 1 if i + 1 < len(words) else i - 1
      words[i], words[j] = words[j], words[i]
    elif edit == "replace":
      words[i] = rng.choice(word_pool)
    elif edit == "repeat":
      words.insert(i, words[i])
    else:
      words, truncated = words[:rng.randrange(1, len(words))], True
  return words


def perturbed_hypotheses(sources: list[str], references: list[str], samples_per_source: int,
                         max_edits: int, sentence_edit_rate: float, seed: int
                         ) -> list[list[str]]:
  rng = random.Random(seed)
  pool = [w for ref in references for w in ref.split()]

  def one(source: str, reference: str) -> str:
    if sentence_edit_rate and rng.random() < sentence_edit_rate:
      return f"{reference} {reference}" if rng.choice(SENTENCE_EDITS) == "repeat_sentence" \
          else source
    return " ".join(corrupt(reference.split(), rng.randint(0, max_edits), pool, rng))

  return [[one(source, reference) for _ in range(samples_per_source)]
          for source, reference in zip(sources, references)]


# --------------------------------------------------------------------------- policy samples
def policy_hypotheses(args, examples) -> list[list[str]]:
  import jax  # pylint: disable=g-import-not-at-top  (only the policy path needs JAX)
  from rest_jax import sampling, sharding  # pylint: disable=g-import-not-at-top
  from rest_jax.configs import SamplingConfig  # pylint: disable=g-import-not-at-top
  from rest_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from rest_jax.models.transformer import EOS_ID, PAD_ID  # pylint: disable=g-import-not-at-top
  from rest_jax.rewards import reward_model as rm  # pylint: disable=g-import-not-at-top
  from rest_jax.rewards import reward_model_training  # pylint: disable=g-import-not-at-top

  policy = reward_model_training.load_policy_for_sampling(
      args.policy, args.checkpoint_step, vocabulary_spec=args.policy_vocab)
  vocabulary = policy.vocabulary
  print(f"policy {args.policy} step {policy.step}, vocabulary {policy.vocabulary_name!r}")
  config = SamplingConfig(max_decode_len=args.max_decode_len, temperature=args.temperature,
                          top_k=args.top_k, num_samples=args.samples_per_source)
  sampler = sampling.make_sampler(policy.model, config, policy.mesh, policy.param_shardings)
  inputs = [np.asarray(list(vocabulary.encode(e.source)) + [EOS_ID], np.int32) for e in examples]
  source_len = -(-max(map(len, inputs)) // 8) * 8
  batch_size = rm.round_batch_size(args.batch_size, policy.mesh)
  rng, out = jax.random.PRNGKey(args.seed), []
  for k, start in enumerate(range(0, len(inputs), batch_size)):
    rows = inputs[start:start + batch_size]
    batch = pipeline.pad_batch(rows + [np.asarray([EOS_ID])] * (batch_size - len(rows)),
                               source_len)
    result = sampler(policy.params, sharding.shard_batch(batch, policy.mesh),
                     jax.random.fold_in(rng, k))
    tokens = np.asarray(jax.device_get(result.tokens))[:len(rows)]
    for per_source in tokens:
      texts = []
      for ids in per_source:
        ids = ids.tolist()
        ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
        texts.append(vocabulary.decode([i for i in ids if i != PAD_ID]))
      out.append(texts)
    print(f"sampled {min(start + batch_size, len(inputs))}/{len(inputs)} sources", flush=True)
  return out


# ----------------------------------------------------------------------------------- output
def clean(text: str) -> str:
  return " ".join(text.replace("\t", " ").split())


def write_rows(path: str, fmt: str, sources, hypotheses, scores, margin: float) -> int:
  count = 0
  with open(path, "w", encoding="utf-8") as f:
    for source, hyps, row_scores in zip(sources, hypotheses, scores):
      if fmt == "regression":
        for hyp, score in zip(hyps, row_scores):
          f.write(f"{clean(source)}\t{clean(hyp)}\t{score:.6f}\n")
          count += 1
        continue
      for i in range(len(hyps)):
        for j in range(len(hyps)):
          if row_scores[i] - row_scores[j] >= margin and clean(hyps[i]) != clean(hyps[j]):
            f.write(f"{clean(source)}\t{clean(hyps[i])}\t{clean(hyps[j])}\n")
            count += 1
  return count


def main(argv=None) -> int:
  args = parse_args(argv)
  from rest_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from rest_jax.rewards import base, registry  # pylint: disable=g-import-not-at-top
  metric = registry.reward_from_spec(args.metric)  # Bad specs fail before any sampling.
  if args.samples_per_source < 1:
    raise ValueError(f"--samples_per_source={args.samples_per_source}: must be >= 1")
  examples = pipeline.load_examples(args.task, args.split, max_examples=args.max_examples)
  print(f"{len(examples)} examples from {args.task}/{args.split}")
  references = [e.reference for e in examples]
  if args.policy == RANDOM_PERTURBATION:
    hypotheses = perturbed_hypotheses([e.source for e in examples], references,
                                      args.samples_per_source, args.max_edits,
                                      args.sentence_edit_rate, args.seed)
  else:
    hypotheses = policy_hypotheses(args, examples)
  n = args.samples_per_source
  flat = base.score_batch(metric, [e.source for e in examples for _ in range(n)],
                          [h for hyps in hypotheses for h in hyps],
                          [r for r in references for _ in range(n)])
  scores = flat.reshape(len(examples), n)
  count = write_rows(args.output_tsv, args.format, [e.source for e in examples], hypotheses,
                     scores, args.preference_margin)
  deciles = collections.Counter(np.minimum((flat * 10).astype(int), 9).tolist())
  print(f"{args.metric} of {flat.size} hypotheses: mean {flat.mean():.3f}, per decile "
        + " ".join(f"{d / 10:.1f}:{deciles.get(d, 0)}" for d in range(10)))
  print(f"wrote {count} {args.format} rows to {args.output_tsv}")
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
