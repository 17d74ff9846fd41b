#!/usr/bin/env bash
# Issue 18's GPU checks as ONE prepared script for the device machine (one H200-class GPU):
# the bench first (bench/gpu_train.py: plain Trainer vs ours, full and LoRA; evaluation speed
# at several batch sizes; each attention kernel), then the CUDA tests (tests/test_cuda.py:
# every kernel keeps packed documents apart, in fp32 and bf16; runs on the chosen kernel,
# compiled, with Liger; a speed probe with the run's kernels; the benchmarks' batch size search). Expected about 5-6 minutes; at most 8 (the two timeouts below).
#
# Before the call, in the checkout the device tool sends (the lead's):
#     bash bench/gpu_wheels.sh                                   (fills .whl/, ~2 MB, ignored by git)
# The call (device tool):
#     run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Figures come back in $OUT: device.txt, bench.log, bench.json (written after each part of the
# bench, so a bench cut short still returns what it measured), pytest.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run bash bench/gpu_wheels.sh here first, and carry .whl"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src-link
# CPT Studio from this tree, without pip (the package-dir mapping of pyproject, as links)
mkdir -p src-link/cpt_studio && for d in core gui resources; do ln -sfn "$PWD/$d" "src-link/cpt_studio/$d"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)" | tee -a "$OUT/device.txt"
python3 -c "import liger_kernel, importlib.metadata as m; print('liger-kernel', m.version('liger-kernel'))" 2>&1 | tail -1 | tee -a "$OUT/device.txt"
start=$SECONDS
# The bench skips its optional parts (other evaluation batch sizes, kernel speeds) after --budget s.
timeout 300 python3 bench/gpu_train.py --budget 200 --out "$OUT/bench.json" 2>&1 \
    | grep -v "^{'\|Warning\|warnings.warn" | tee "$OUT/bench.log" | tail -45
echo "bench: $((SECONDS - start)) s (exit ${PIPESTATUS[0]})" | tee -a "$OUT/bench.log"
start=$SECONDS
# -v: each test's result as it ends (a run cut by the timeout still shows which passed);
# --timeout: one stuck test (a compile) fails alone; --durations: what each test cost.
timeout 200 python3 -m pytest -v -s -p no:cacheprovider -o addopts="" --timeout=120 --durations=0 \
    tests/test_cuda.py 2>&1 | tee "$OUT/pytest.log" | grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed|packed vs alone|kernels: |probe: |benchmarks: |s call"
echo "CUDA tests: $((SECONDS - start)) s (exit ${PIPESTATUS[0]})" | tee -a "$OUT/pytest.log"
