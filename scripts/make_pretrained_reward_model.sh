#!/usr/bin/env bash
# Rebuilds a reward model shipped in rest_jax/rewards/pretrained/NAME, probes it and writes its
# model card (MODEL_CARD.md beside the checkpoint).
#
#   bash scripts/make_pretrained_reward_model.sh OUT                 # ding_de_en (the default)
#   bash scripts/make_pretrained_reward_model.sh --name=de_en OUT POLICY [POLICY ...]
#   POLICIES="DIR1 DIR2" bash scripts/make_pretrained_reward_model.sh --name=de_en OUT
#
# OUT is a scratch directory for the data, the checkpoints, the probe results and the exact
# commands (OUT/commands.sh). Options: --no_install (build and probe only) and
# --allow_failing_probes (install even if a probe kind is below MIN_WIN_RATE).
#
# ding_de_en (the quickstart's reward, ~15 min on 2 CPU cores): trains a BC policy of the
# quickstart's model for 1,500 steps unless POLICY is given, samples 4000 training sources x 8
# from it, adds 10k randomly edited references, all labelled with chrF, and regresses a `toy`
# reward model on them. No probe bar (it over-rates repetitions; docs/rewards.md).
#
# de_en (needs policies of the de_en task, weak to strong, e.g. BC snapshots every 1000 steps
# and the final BC policy): per policy SAMPLES (2) samples for each of POLICY_SOURCES (3000)
# training sources, plus the reference (label 1) and 2 corruptions (label 0) per source for
# EXTRA_SOURCES (15000) training sources; a validation set (VALIDATION_SOURCES, all 1266) and a
# held-out set (HELDOUT_SOURCES, 500 of each test split) the same way with 1 sample per policy;
# a reward model with the architecture, embeddings and encoder layers of INIT_ENCODER_FROM
# (pretrained=de_en_small; set it empty for a fresh encoder of width D_MODEL (64), LAYERS (2)
# layers and D_FF (128)), POOLING (mean_max), trained STEPS (700) steps at learning rate LR
# (5e-4) and batch BATCH_SIZE (128) on length-grouped batches (LENGTH_GROUPS, 20); probed on
# PROBE_SOURCES (500) pairs of each test split and installed only if every corruption kind
# reaches MIN_WIN_RATE (0.9). The variables in brackets override.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
name=ding_de_en install=1 allow_failing=0 positional=()
for arg in "$@"; do
  case "$arg" in
    --name=*) name=${arg#--name=} ;;
    --no_install) install=0 ;;
    --allow_failing_probes) allow_failing=1 ;;
    --*) echo "unknown option $arg; allowed: --name=ding_de_en|de_en, --no_install," \
              "--allow_failing_probes" >&2; exit 2 ;;
    *) positional+=("$arg") ;;
  esac
done
case "$name" in
  ding_de_en|de_en) ;;
  *) echo "--name=$name is invalid: expected ding_de_en or de_en" >&2; exit 2 ;;
esac
[ ${#positional[@]} -ge 1 ] || { echo "usage: $0 [--name=ding_de_en|de_en] OUT [POLICY ...]" >&2; exit 2; }
out=${positional[0]}
policies=("${positional[@]:1}")
read -r -a env_policies <<< "${POLICIES:-}"
policies+=("${env_policies[@]}")
policy_flags=()
for policy in "${policies[@]}"; do  # Checked and made absolute before anything runs.
  [ -e "$policy" ] || { echo "policy $policy does not exist" >&2; exit 2; }
  policy_flags+=("--policy=$(realpath "$policy")")
done
mkdir -p "$out"
out=$(realpath "$out")
cd "$repo"
commands="$out/commands.sh"
: > "$commands"

# Runs a command and appends it, exactly, to OUT/commands.sh (the model card quotes that file).
run() {
  printf '%q ' "$@" | sed 's/ $//' >> "$commands"
  echo >> "$commands"
  "$@"
}

build_ding() {
  if [ ${#policy_flags[@]} -eq 0 ]; then
    run python -m rest_jax.main --gin_file=ding_de_en/quickstart.gin --workdir="$out/policy" \
        --gin.REWARD="'chrf'" --gin.bc/TrainPhaseConfig.max_steps=1500 \
        --gin.bc/TrainPhaseConfig.eval_every=250 --gin.rest_loop.run.stop_after_phase="'bc'"
    policy_flags=("--policy=$out/policy/checkpoints_bc")
  fi
  run python scripts/make_reward_data.py "${policy_flags[@]}" --task=ding_de_en \
      --split=train --max_examples=4000 --samples_per_source=8 --max_decode_len=32 \
      --batch_size=128 --output_tsv="$out/policy_samples.tsv"
  run python scripts/make_reward_data.py --policy=random_perturbation --task=ding_de_en \
      --split=train --max_examples=2500 --samples_per_source=4 --sentence_edit_rate=0.1 \
      --output_tsv="$out/perturbed.tsv"
  run python scripts/make_reward_data.py "${policy_flags[@]}" --task=ding_de_en \
      --split=validation --max_examples=500 --samples_per_source=2 --max_decode_len=32 \
      --reference_rate=1 --corruption_rate=2 --seed=3 --output_tsv="$out/heldout.tsv"
  cat "$out/policy_samples.tsv" "$out/perturbed.tsv" > "$out/train.tsv"
  echo "cat $out/policy_samples.tsv $out/perturbed.tsv > $out/train.tsv" >> "$commands"
  run python scripts/train_reward_model.py --train_tsv="$out/train.tsv" --vocab=ding \
      --preset=toy --steps=1500 --eval_every=250 --batch_size=128 --max_source_len=32 \
      --max_hypothesis_len=48 --dropout_rate=0.1 --overwrite --output_dir="$out/reward_model"
  summaries=("$out/policy_samples.tsv.summary.json" "$out/perturbed.tsv.summary.json"
             "$out/heldout.tsv.summary.json")
  probe_inputs=(--tsv=rest_jax/data/ding/validation.tsv.gz --max_examples=500)
  min_win_rate=${MIN_WIN_RATE:-}
}

build_de_en() {
  [ ${#policy_flags[@]} -gt 0 ] || { echo "--name=de_en needs policy checkpoints:" \
      "POLICY arguments or POLICIES" >&2; exit 2; }
  local data=rest_jax/data/de_en samples=${SAMPLES:-2} decode=${DECODE_LEN:-48}
  INIT_ENCODER_FROM=${INIT_ENCODER_FROM-pretrained=de_en_small}
  local sampling=(--temperature=0.8 --max_decode_len="$decode" --batch_size=64
                  --policy_vocab=de_en --reference_rate=1 --corruption_rate=2)
  run python scripts/make_reward_data.py "${policy_flags[@]}" "${sampling[@]}" \
      --samples_per_source="$samples" --tsv="$data/train.tsv.gz" --max_examples="${POLICY_SOURCES:-3000}" --seed=0 \
      --output_tsv="$out/policy_samples.tsv"
  run python scripts/make_reward_data.py --tsv="$data/train.tsv.gz" \
      --max_examples="${EXTRA_SOURCES:-15000}" --reference_rate=1 --corruption_rate=2 --seed=1 \
      --output_tsv="$out/references.tsv"
  run python scripts/make_reward_data.py "${policy_flags[@]}" "${sampling[@]}" \
      --samples_per_source=1 --tsv="$data/validation.tsv.gz" \
      --max_examples="${VALIDATION_SOURCES:-2000}" --seed=2 --output_tsv="$out/validation.tsv"
  run python scripts/make_reward_data.py "${policy_flags[@]}" "${sampling[@]}" \
      --samples_per_source=1 --tsv="$data/test_dict.tsv.gz" --tsv="$data/test_software.tsv.gz" \
      --max_examples="${HELDOUT_SOURCES:-500}" --seed=3 --output_tsv="$out/heldout.tsv"
  cat "$out/policy_samples.tsv" "$out/references.tsv" > "$out/train.tsv"
  echo "cat $out/policy_samples.tsv $out/references.tsv > $out/train.tsv" >> "$commands"
  local architecture=(--init_encoder_from="$INIT_ENCODER_FROM")
  if [ -z "$INIT_ENCODER_FROM" ]; then  # From scratch: a small encoder of its own.
    architecture=(--preset=toy --d_model="${D_MODEL:-64}" --d_ff="${D_FF:-128}"
                  --num_layers="${LAYERS:-2}")
  fi
  run python scripts/train_reward_model.py --train_tsv="$out/train.tsv" \
      --validation_tsv="$out/validation.tsv" --vocab=de_en "${architecture[@]}" \
      --pooling="${POOLING:-mean_max}" --steps="${STEPS:-700}" --eval_every="${EVAL_EVERY:-350}" \
      --learning_rate="${LR:-5e-4}" --batch_size="${BATCH_SIZE:-128}" \
      --length_group_batches="${LENGTH_GROUPS:-20}" --max_source_len=64 \
      --max_hypothesis_len=96 --dropout_rate=0.1 --overwrite --output_dir="$out/reward_model"
  summaries=("$out/policy_samples.tsv.summary.json" "$out/references.tsv.summary.json"
             "$out/validation.tsv.summary.json" "$out/heldout.tsv.summary.json")
  probe_inputs=(--tsv="$data/test_dict.tsv.gz" --tsv="$data/test_software.tsv.gz"
                --max_examples="${PROBE_SOURCES:-500}")
  min_win_rate=${MIN_WIN_RATE:-0.9}
}

"build_$name"
sha256sum "$out/train.tsv" | tee "$out/train.tsv.sha256"

probe_flags=("${probe_inputs[@]}" --heldout_tsv="$out/heldout.tsv" --json_out="$out/probe.json")
if [ -n "$min_win_rate" ]; then probe_flags+=(--min_win_rate="$min_win_rate"); fi
set +e
run python scripts/probe_reward_model.py --reward=learned:path="$out/reward_model" \
    --reward=chrf "${probe_flags[@]}"
probe_status=$?
set -e
card_flags=()
for summary in "${summaries[@]}"; do card_flags+=(--data_summary="$summary"); done
python scripts/write_reward_model_card.py --name="$name" --model_dir="$out/reward_model" \
    "${card_flags[@]}" --train_tsv="$out/train.tsv" --probe_json="$out/probe.json" \
    --commands="$commands" --output="$out/MODEL_CARD.md"

if [ "$probe_status" -ne 0 ] && [ "$allow_failing" -eq 0 ]; then
  echo "not installed: the probes failed (see above and $out/MODEL_CARD.md); rebalance the" \
       "data or the model, or pass --allow_failing_probes" >&2
  exit "$probe_status"
fi
if [ "$install" -eq 1 ]; then
  step=$(ls "$out/reward_model" | grep -E '^[0-9]+$' | sort -n | tail -1)
  target=rest_jax/rewards/pretrained/$name
  rm -rf "$target"
  mkdir -p "$target"
  cp -r "$out/reward_model/$step" "$target/"
  cp "$out/MODEL_CARD.md" "$target/MODEL_CARD.md"
  du -sh "$target"
  echo "installed $target (step $step); use the reward spec learned:pretrained=$name"
else
  echo "built $out/reward_model; not installed (--no_install)"
fi
