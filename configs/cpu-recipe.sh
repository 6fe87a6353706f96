#!/usr/bin/env bash
# The CPU recipe (docs/experiments.md): skip-gram vectors for the classic model's characters and bigrams
# (pretrain_embeddings.py, under a minute on two cores), then 21 minutes of training from them (train.py with
# configs/cpu-recipe.json: the classic BiLSTM-CRF with bigrams, lr 6e-3, FGM): at most 22 of issue 13's 30 minutes.
#
#   bash configs/cpu-recipe.sh                                        # seed 42, model in outputs/cpu-recipe
#   SEED=2 bash configs/cpu-recipe.sh --output_dir outputs/cpu-recipe-seed2   # more options go to train.py
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-42}
PYTHON=${PYTHON:-python}
EMBEDDINGS=outputs/cpu-recipe-embeddings-seed$SEED
"$PYTHON" pretrain_embeddings.py configs/cpu-recipe-embeddings.json --seed "$SEED" --output_dir "$EMBEDDINGS"
"$PYTHON" train.py configs/cpu-recipe.json --model_name_or_path "$EMBEDDINGS" --seed "$SEED" "$@"
