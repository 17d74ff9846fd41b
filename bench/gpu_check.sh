#!/usr/bin/env bash
# Issue 18's GPU checks as ONE prepared script for the device machine (one H200-class GPU):
# the CUDA tests (tests/test_cuda.py: every kernel keeps packed documents apart; runs on the
# chosen kernel, compiled, with Liger) and the bench (bench/gpu_train.py: plain Trainer vs ours,
# full and LoRA; evaluation speed; each attention kernel). About 5-6 minutes in all.
#
# Before the call, here:   bash bench/gpu_wheels.sh          (fills .whl/, ignored by git)
# The call (device tool):  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Figures come back in $OUT: pytest.log, bench.log, bench.json.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src-link
# CPT Studio from this tree, without pip (the package-dir mapping of pyproject, as links)
mkdir -p src-link/cpt_studio && for d in core gui resources; do ln -sfn "$PWD/$d" "src-link/cpt_studio/$d"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)" | tee -a "$OUT/device.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_cuda.py -rA -s 2>&1 | tee "$OUT/pytest.log" | tail -30
timeout 300 python3 bench/gpu_train.py --out "$OUT/bench.json" 2>&1 | grep -v "^{'loss'\|Warning\|warnings.warn" | tee "$OUT/bench.log" | tail -40
