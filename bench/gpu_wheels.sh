#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before bench/gpu_check.sh: downloads into .whl/ (ignored by
# git; carried to the device with `carry: [".whl"]`) the pure-Python packages CPT Studio's engine
# imports that the GPU machine's image lacks (its KINDS.md lists what it has): sqlite-utils and
# its helpers, platformdirs, ftfy and wcwidth; liger-kernel, so that the CUDA tests and the
# bench cover Liger's fused kernels too; and lm-eval with what it imports that the image lacks
# (datasets, multiprocess, dill, chardet, pytz, more-itertools; the versions this machine runs),
# for the CUDA test of the benchmarks' batch size search. No CUDA build of anything is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)  # .git/info/exclude; in a worktree, the main one's
grep -qx '/.whl/' "$exclude" 2>/dev/null || { mkdir -p "$(dirname "$exclude")"; echo '/.whl/' >> "$exclude"; }
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    sqlite-utils==4.2.1 sqlite-fts4==1.0.3 click-default-group==1.2.4 platformdirs==4.14.9 \
    ftfy==6.3.1 wcwidth==0.9.4 liger-kernel==0.8.5 \
    lm_eval==0.4.13 datasets==5.2.0 multiprocess==0.70.19 dill==0.4.1 chardet==6.0.0.post1 pytz==2026.6 \
    more-itertools==11.2.1
ls -la .whl
