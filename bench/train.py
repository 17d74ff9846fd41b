"""Training throughput: our run against the seed's plain Trainer script, same model and corpus.

    python bench/train.py [--steps 200] [--seq-len 256] [--micro-batch 8]

  baseline: the seed's script — TrainingArguments, datasets + DataCollatorForLanguageModeling,
            no replay, no evaluation, no checkpoints within the run;
  ours:     cpt_studio.core.training.train on a run folder — replay mixing, per-step events, held-out
            evaluation (step 0 and the end), a final checkpoint with rotation.
Both on the tiny Llama test model (2 layers, width 64) and the same synthetic corpus, on
the CPU. Prints tokens/s of each, our overhead (evaluation time excluded, reported apart),
and the ratio. Best of --repeat runs of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def baseline(model_dir: Path, texts: list[str], args, out: Path) -> float:
    """Seconds of Trainer construction and train() for the seed-style script."""
    import datasets
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    chunks = [ids[i:i + args.seq_len] for i in range(0, len(ids) - args.seq_len + 1, args.seq_len)]
    dataset = datasets.Dataset.from_dict({"input_ids": chunks})
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=1,
        learning_rate=2e-5, max_steps=args.steps, logging_steps=10, save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, lr_scheduler_type="cosine", warmup_steps=0.01)
    started = time.perf_counter()  # Trainer construction and train(), as for ours
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    return time.perf_counter() - started


def ours(model_dir: Path, data: Path, args, root: Path) -> tuple[float, float]:
    """(seconds from the prepared corpus to the final status, evaluation excluded; evaluation seconds)."""
    from cpt_studio.core.config import (
        BatchConfig,
        CheckpointConfig,
        CorpusConfig,
        EvalConfig,
        ModelConfig,
        RunConfig,
        ScheduleConfig,
    )
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.runs import create_run
    from cpt_studio.core.testing.run_helpers import events_of
    from cpt_studio.core.training import train

    config = RunConfig(
        name="bench", model=ModelConfig(str(model_dir)),
        corpus=CorpusConfig(domain=[SourceSpec(str(data / "domain.jsonl"))],
                            general=[SourceSpec(str(data / "general.jsonl"))], replay_ratio=0.05),
        schedule=ScheduleConfig(max_steps=args.steps),
        batch=BatchConfig(micro_batch=args.micro_batch, grad_accum=1, seq_len=args.seq_len),
        eval=EvalConfig(interval=10 ** 9, heldout_count=8), checkpoints=CheckpointConfig(interval=10 ** 9, keep=1))
    run_dir = create_run(config, root)
    train(run_dir)  # includes loading and (cached) corpus preparation: measured from the events
    events = events_of(run_dir)
    began = next(e["time"] for e in events if e.get("ready"))  # the corpus is prepared
    ended = events[-1]["time"]
    eval_seconds = sum(e["seconds"] for e in events if e["type"] == "eval")
    return ended - began - eval_seconds, eval_seconds


def main() -> None:
    from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl
    from cpt_studio.core.testing.tiny_model import build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CPT_STUDIO_HOME"] = str(tmp / "home")
        model_dir = build_tiny_model(tmp / "model")
        domain, general = make_documents(3000, seed=1), make_documents(600, seed=2)
        write_jsonl(tmp / "domain.jsonl", domain)
        write_jsonl(tmp / "general.jsonl", general)
        base = min(baseline(model_dir, domain, args, tmp / f"base-{r}") for r in range(args.repeat))
        runs = [ours(model_dir, tmp, args, tmp / f"runs-{r}") for r in range(args.repeat)]
    train_seconds, eval_seconds = min(runs)
    tokens = args.steps * args.micro_batch * args.seq_len
    print(f"{args.steps} steps of {args.micro_batch} x {args.seq_len} tokens on the tiny model, CPU, "
          f"{os.cpu_count()} cores")
    print(f"baseline (seed's plain Trainer)  {tokens / base:>10,.0f} tokens/s  ({base:.2f} s)")
    print(f"ours (mixing, events, checkpoint){tokens / train_seconds:>10,.0f} tokens/s  ({train_seconds:.2f} s)"
          f"   + evaluation {eval_seconds:.2f} s, reported apart")
    print(f"ours / baseline = {base / train_seconds:.3f}   overhead = {train_seconds / base - 1:+.1%}")


if __name__ == "__main__":
    main()
