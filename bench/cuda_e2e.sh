#!/usr/bin/env bash
# The end-to-end training tests once on CUDA (for the device machine: see the issue notes).
# Carries the wheels the GPU image lacks in .whl/ (platformdirs, sqlite-utils and its two helpers,
# psutil) and installs CPT Studio itself from this tree (not editable: the tests import the
# installed cpt_studio package). Precision, attention and checkpointing resolve to 'auto' (bf16,
# sdpa or flash-attn, gradient checkpointing on).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir . || exit 1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported(), '| transformers', transformers.__version__, '| peft', peft.__version__)"
python3 -c "import flash_attn" 2>/dev/null && echo "flash-attn: installed" || echo "flash-attn: not installed (sdpa is used)"
python3 -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_packing.py tests/test_mixing.py -rA 2>&1 | tee ${OUT:-/tmp}/pytest.log | tail -25
# What the runs said about their hardware, and the step-0 / final evals of one run
python3 - <<'PY'
import glob, json
for events in sorted(glob.glob("/tmp/pytest-of-*/pytest-*/test_a_full_run*/runs/*/events.jsonl"))[:1]:
    lines = [json.loads(l) for l in open(events)]
    print([e["message"] for e in lines if e.get("phase") == "loading"][0])
    for e in lines:
        if e["type"] == "eval":
            print("eval step", e["step"], "domain ppl %.3f general ppl %.3f (%.3f s)" % (e["domain_ppl"], e["general_ppl"], e["seconds"]))
    steps = [e for e in lines if e["type"] == "step"]
    print("steps", len(steps), "last loss %.4f" % steps[-1]["loss"], "tokens/s %.0f" % steps[-1]["tokens_per_second"])
PY
