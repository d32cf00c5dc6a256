#!/usr/bin/env bash
# Rebuilds rest_jax/rewards/pretrained/ding_de_en, the reference-free reward model that the
# quickstart scores with (`learned:pretrained=ding_de_en`). About 15 minutes on 2 CPU cores.
#
#   bash scripts/make_pretrained_reward_model.sh /tmp/ding_rm
#
# 1. A BC policy of the quickstart's model and BC settings, trained 1,500 steps (the quickstart
#    trains 2,000). BC selects on validation chrF, so the policy does not depend on the reward,
#    which is set to chrF here because the reward model does not exist yet.
# 2. Its samples (4000 training sources x 8 at T=0.8), labelled with sentence chrF against the
#    reference, plus 10k perturbed references (word edits, and 10% whole-sentence negatives:
#    the reference said twice or the source copied), also labelled with chrF.
# 3. A `toy` reward model regressed on the chrF labels; the best checkpoint by validation
#    Spearman is kept.
set -euo pipefail
out=${1:?usage: $0 OUTPUT_DIR}
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
python -m rest_jax.main --gin_file=ding_de_en/quickstart.gin --workdir="$out/policy" \
    --gin.REWARD="'chrf'" --gin.bc/TrainPhaseConfig.max_steps=1500 \
    --gin.bc/TrainPhaseConfig.eval_every=250 --gin.rest_loop.run.stop_after_phase="'bc'"
python scripts/make_reward_data.py --policy="$out/policy/checkpoints_bc" --task=ding_de_en \
    --split=train --max_examples=4000 --samples_per_source=8 --max_decode_len=32 \
    --batch_size=128 --output_tsv="$out/policy_samples.tsv"
python scripts/make_reward_data.py --policy=random_perturbation --task=ding_de_en --split=train \
    --max_examples=2500 --samples_per_source=4 --sentence_edit_rate=0.1 \
    --output_tsv="$out/perturbed.tsv"
cat "$out/policy_samples.tsv" "$out/perturbed.tsv" > "$out/train.tsv"
python scripts/train_reward_model.py --train_tsv="$out/train.tsv" --vocab=ding --preset=toy \
    --steps=1500 --eval_every=250 --batch_size=128 --max_source_len=32 \
    --max_hypothesis_len=48 --dropout_rate=0.1 --output_dir="$out/reward_model"
echo "Copy $out/reward_model/<best step> to rest_jax/rewards/pretrained/ding_de_en/ to ship it."
