#!/usr/bin/env bash
# The most accurate model a CPU gives (docs/experiments.md, "The recipe's seed ensemble and its distilled
# student"): the CPU recipe (configs/cpu-recipe.sh) trained on all the training data once per seed, then the
# models combined by ensemble.py (their CRF potentials averaged, one Viterbi pass) and scored beside each other on
# the test split. One model that keeps part of its gain at one model's cost: SEED=42 bash configs/cpu-recipe.sh
# --output_dir outputs/distilled --teacher OUT_DIR/ensemble --teacher_weight 0.5
#
#   bash configs/cpu-recipe-ensemble.sh                     # seeds 42 2 3: about 3 x 22 minutes on two cores
#   SEEDS="42 2 3 4 5" OUT_DIR=outputs/seeds5 bash configs/cpu-recipe-ensemble.sh   # more options go to train.py
#
# The members are OUT_DIR/seed-S, the ensemble OUT_DIR/ensemble. Rerun after a stop, the command goes on where
# it stopped, seed by seed: a finished member is skipped (train.py and pretrain_embeddings.py leave a finished
# run as it is), an interrupted one resumes from its newest checkpoint, and the ensemble is made once all members
# are finished (again only when its members changed). RECIPE is the script that trains one member from SEED and
# --output_dir (configs/cpu-recipe.sh; the tests give a tiny one).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-42 2 3}
OUT_DIR=${OUT_DIR:-outputs/cpu-recipe-ensemble}
RECIPE=${RECIPE:-configs/cpu-recipe.sh}
PYTHON=${PYTHON:-python}
export PYTHON
read -r -a seeds <<< "$SEEDS"
if [ "${#seeds[@]}" -lt 2 ]; then
    echo "cpu-recipe-ensemble.sh: SEEDS must name at least 2 seeds, got '$SEEDS'" >&2
    exit 2
fi
members=()
for seed in "${seeds[@]}"; do
    echo "cpu-recipe-ensemble.sh: member seed $seed in $OUT_DIR/seed-$seed"
    SEED=$seed bash "$RECIPE" --output_dir "$OUT_DIR/seed-$seed" "$@"
    members+=("$OUT_DIR/seed-$seed")
done
# ensemble.py writes its folder whole or not at all: a folder there is a finished ensemble, of these members or
# of others (then made again).
same_members=$("$PYTHON" - "$OUT_DIR/ensemble/ensemble_members.json" "${members[@]}" <<'EOF'
import json, sys
from pathlib import Path

record, members = Path(sys.argv[1]), sys.argv[2:]
kept = record.is_file() and [m["folder"] for m in json.loads(record.read_text(encoding="utf-8"))["members"]] == members
print("yes" if kept else "no")
EOF
)
if [ "$same_members" = yes ]; then
    echo "cpu-recipe-ensemble.sh: $OUT_DIR/ensemble is the ensemble of these members already"
else
    overwrite=()
    [ -d "$OUT_DIR/ensemble" ] && overwrite=(--overwrite_output_dir)
    "$PYTHON" ensemble.py --members "${members[@]}" --output_dir "$OUT_DIR/ensemble" "${overwrite[@]}"
fi
