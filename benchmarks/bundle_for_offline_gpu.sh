#!/usr/bin/env bash
# Bundle what a GPU machine without internet access needs to run the benchmarks and training of this project,
# for machines whose Python already has torch, transformers and accelerate (CUDA builds) but not the rest:
#   .whl/       wheels of datasets, evaluate, seqeval, pytorch-crf and the dependencies they add
#   .gpu_data/  the corpus and the bert-base-chinese vocabulary/config, copied from ../shared/data
# Both folders are git-ignored. On the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   python3 benchmarks/bench_crf.py --device cuda ...;  python3 train.py --data_dir .gpu_data/ruijin_round1/train ...
# PYTHON_VERSION (default 3.12) is the GPU machine's Python.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
SHARED=${SHARED:-../shared/data}

rm -rf .whl && mkdir -p .whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do platforms+=(--platform "$tag"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
    "${platforms[@]}" -d .whl datasets==5.2.0 evaluate==0.4.6 pytorch-crf==0.7.2 dill==0.4.0 multiprocess==0.70.18
# seqeval is published as a source distribution only; its wheel is pure Python.
python3 -m pip wheel -q --no-deps -w .whl seqeval==1.2.2

rm -rf .gpu_data && mkdir -p .gpu_data
cp -r "$SHARED/ruijin_round1" "$SHARED/bert-base-chinese" .gpu_data/
du -sh .whl .gpu_data
