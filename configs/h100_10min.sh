#!/usr/bin/env bash
# The plan's real-corpus run on one GPU (an H100): masked-LM pretraining of a BERT from the bert-base-chinese
# vocabulary on the training split + unlabelled documents, then fine-tuning, with wall-clock time per phase.
#
#   bash configs/h100_10min.sh                       # data from ../shared/data, results in outputs/h100
#   DATA=.gpu_data OUT_DIR=/tmp/run1 REPORT_DIR=$OUT/run1 MLM_MINUTES=4 bash configs/h100_10min.sh
#
# Both phases train for a wall-clock budget (--time_budget_minutes: the learning rate warms up and decays to
# zero over the budget, see brat_ner/trainer/time_budget.py), so the run ends on time on any GPU; the epochs are upper bounds.
# The budgets leave about 2 minutes of the 10 for start-up, the corpus, evaluation and the test pass. No early
# stopping: the budget ends the run, its last minutes at a low learning rate, and the best epoch is kept.
# Every setting below can be overridden from the environment. They are a starting point, not yet a measured
# recipe: choose them on the validation F1 that train.py prints and keeps in all_results.json. REPORT_DIR, when
# set, receives the reports, plots and log of the run (a handful of small files) without the weights.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT_DIR=${OUT_DIR:-outputs/h100}
ENCODER=${ENCODER:-configs/bert-small-chinese.json}
MLM_MINUTES=${MLM_MINUTES:-4.5}
MLM_EPOCHS=${MLM_EPOCHS:-1000}
MLM_CHARS=${MLM_CHARS:-254}
MLM_LR=${MLM_LR:-1e-3}
NER_MINUTES=${NER_MINUTES:-3}
NER_EPOCHS=${NER_EPOCHS:-100}
NER_CHARS=${NER_CHARS:-126}
NER_LR=${NER_LR:-1e-4}
HEAD_LR=${HEAD_LR:-1e-3}
NER_BATCH=${NER_BATCH:-32}
WORKERS=${WORKERS:-4}
PYTHON=${PYTHON:-python3}
REPORT_DIR=${REPORT_DIR:-}
if [[ -n $REPORT_DIR ]]; then
    mkdir -p "$REPORT_DIR"
    exec > >(tee "$REPORT_DIR/run.log") 2>&1
fi

start=$(date +%s)
"$PYTHON" pretrain_mlm.py --data_dir "$DATA/ruijin_round1/train" --extra_text_dirs "$DATA/ruijin_round1/unlabeled" \
    --encoder_config "$ENCODER" --tokenizer_name "$DATA/bert-base-chinese" --output_dir "$OUT_DIR/mlm" \
    --window_chars "$MLM_CHARS" --num_train_epochs "$MLM_EPOCHS" --time_budget_minutes "$MLM_MINUTES" \
    --learning_rate "$MLM_LR" \
    --per_device_train_batch_size 128 --dataloader_num_workers "$WORKERS" --logging_steps 100 --disable_tqdm true
pretrained=$(date +%s)
"$PYTHON" train.py --data_dir "$DATA/ruijin_round1/train" --model_name_or_path "$OUT_DIR/mlm" \
    --tokenizer_name "$DATA/bert-base-chinese" --output_dir "$OUT_DIR/ner" --window_chars "$NER_CHARS" \
    --num_train_epochs "$NER_EPOCHS" --time_budget_minutes "$NER_MINUTES" \
    --learning_rate "$NER_LR" --head_learning_rate "$HEAD_LR" \
    --per_device_train_batch_size "$NER_BATCH" --per_device_eval_batch_size 128 --early_stopping_patience 0 \
    --save_total_limit 1 --dataloader_num_workers "$WORKERS" --disable_tqdm true
finished=$(date +%s)
echo "wall clock: pretraining $((pretrained - start)) s, fine-tuning and test $((finished - pretrained)) s," \
     "total $((finished - start)) s"
if [[ -n $REPORT_DIR ]]; then
    cp "$OUT_DIR/mlm/all_results.json" "$REPORT_DIR/mlm_results.json"
    for name in all_results.json test_report.json test_report.md corpus.json training_curves.png \
                test_f1_per_type.png; do
        cp "$OUT_DIR/ner/$name" "$REPORT_DIR/"
    done
fi
