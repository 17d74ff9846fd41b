"""Instruction tuning after CPT on the demo model: base -> CPT LoRA -> SFT LoRA, and the
answer to a pharmacology question before and after.

    CPT_STUDIO_HOME=/tmp/demohome OMP_NUM_THREADS=1 python bench/sft_demo.py [--cpt-steps 4] [--sft-steps 24] [--parent RUN]

A short LoRA CPT run of the demo model (SmolLM2-135M-Instruct) on the demo corpus
(resources/demo), then an SFT run chained to its last checkpoint (`cpt_studio.core.sft_run`:
the CPT adapter merged into start_model/, an SFT LoRA on top) on a handful of Q&A pairs about
the demo's immunosuppressants, both in this process. Printed: the greedy answer (chat template
applied) of the CPT checkpoint and of the SFT checkpoint to a question it trained on and to one
it held out, and the held-out response loss at the SFT run's start and end.
A demo, not a measurement: a handful of pairs, a few dozen steps at LoRA rates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from cpt_studio.core.config import (
    BatchConfig,
    CheckpointConfig,
    CorpusConfig,
    EvalConfig,
    GuardConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
)
from cpt_studio.core.corpus import SourceSpec
from cpt_studio.core.generate import load_for_generation
from cpt_studio.core.models import demo_model_path
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import create_run
from cpt_studio.core.sft_data import generation_prompt
from cpt_studio.core.sft_run import create_sft_run, sft_config
from cpt_studio.core.timeline import RunTimeline
from cpt_studio.core.training import train

DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo"
PAIRS = [
    ("Which immunophilin does tacrolimus bind inside the T lymphocyte?", "FKBP12."),
    ("Which immunophilin does cyclosporine bind?", "Cyclophilin."),
    ("What was sirolimus originally called?", "Rapamycin."),
    ("Where was sirolimus discovered?", "In a soil sample from Easter Island."),
    ("Which enzyme does mycophenolic acid inhibit?", "Inosine monophosphate dehydrogenase."),
    ("What is mycophenolate mofetil hydrolysed to after absorption?", "Mycophenolic acid."),
    ("Everolimus is a derivative of which drug?", "Sirolimus."),
    ("Azathioprine is a prodrug of what?", "6-mercaptopurine."),
    ("Where is most of the tacrolimus in a blood sample?", "Bound to red cells."),
    ("What is the most common neurological effect of tacrolimus?", "Tremor."),
    ("Which enzyme inactivates 6-mercaptopurine?", "Thiopurine methyltransferase (TPMT)."),
    ("Rifampicin induces which enzyme and transporter?", "CYP3A4 and P-glycoprotein."),
]


def cpt_parent(root: Path, model: Path, steps: int) -> Path:
    config = RunConfig(
        name="demo CPT LoRA", model=ModelConfig(str(model)),
        corpus=CorpusConfig(domain=[SourceSpec(str(DEMO / "domain.jsonl"))],
                            general=[SourceSpec(str(DEMO / "general.jsonl"))], replay_ratio=0.05),
        method=MethodConfig(kind="lora", lora_rank=16, lora_alpha=32),
        schedule=ScheduleConfig(peak_lr=2e-4, max_steps=steps, warmup_ratio=0.0),
        batch=BatchConfig(micro_batch=4, grad_accum=1, seq_len=256),
        eval=EvalConfig(interval=steps, heldout_count=4, max_tokens=2048),
        checkpoints=CheckpointConfig(interval=steps, keep=2),
        guard=GuardConfig(enabled=False))
    run_dir = create_run(config, root)
    assert train(run_dir) == "finished", run_dir
    return run_dir


def sft_run(root: Path, parent: Path, cpt_steps: int, steps: int) -> Path:
    data = root / "pharmacology_qa.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n" for q, a in PAIRS))
    config = sft_config(parent, cpt_steps, [str(data)], method="lora")
    config.schedule.max_steps, config.schedule.peak_lr = steps, 3e-4  # LoRA on a handful of pairs
    config.eval = EvalConfig(interval=steps, heldout_count=2, max_tokens=2048)
    config.checkpoints = CheckpointConfig(interval=steps, keep=2)
    run_dir = create_sft_run(config, root)
    assert train(run_dir) == "finished", run_dir
    return run_dir


def answer(source: Path, question: str) -> str:
    model, tokenizer = load_for_generation(source)
    model.eval()
    if not tokenizer.chat_template:  # not expected: the demo model has its own
        raise SystemExit(f"{source}: no chat template")
    ids = tokenizer(generation_prompt(tokenizer, [{"role": "user", "content": question}]),
                    return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpt-steps", type=int, default=4)
    parser.add_argument("--sft-steps", type=int, default=24)
    parser.add_argument("--parent", type=Path, help="a CPT run this script made before (its --cpt-steps)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sft-demo-"))
    parent = args.parent or cpt_parent(root, demo_model_path(), args.cpt_steps)
    run_dir = sft_run(root, parent, args.cpt_steps, args.sft_steps)
    paths = RunPaths(run_dir)
    held_out = [json.loads(line)["messages"][0]["content"] for line in paths.heldout("sft").read_text().splitlines()]
    trained = next(q for q, _ in PAIRS if q not in held_out)
    evals = [e.to_dict() for e in RunTimeline.load(paths.events).events if e.TYPE == "eval"]
    print(f"runs in {root}; template: {paths.chat_template.read_text()[:60]!r}...")
    print(f"held-out response loss: {evals[0]['domain_loss']:.3f} at the start, {evals[-1]['domain_loss']:.3f} "
          f"after {args.sft_steps} steps; forgetting {evals[-1].get('forgetting', float('nan')):+.1%}")
    for kind, question in (("trained", trained), ("held out", held_out[0])):
        print(f"\n[{kind}] {question}")
        print(f"  CPT checkpoint: {answer(RunPaths(parent).checkpoint(args.cpt_steps), question)}")
        print(f"  after SFT:      {answer(paths.checkpoint(args.sft_steps), question)}")


if __name__ == "__main__":
    main()
