"""GPU training speed: our run against the plain Trainer script, full and LoRA, on one GPU.

    python bench/gpu_train.py [--out figures.json] [--steps 40] [--smoke]

Model: about 0.5 B parameters, Qwen2.5-0.5B's shape as a Llama (hidden 896, 24 layers,
intermediate 4864, 14 heads, 2 KV heads, vocabulary 151,936, tied embeddings) with random
weights built from its config (no download), and a byte-level BPE tokenizer trained here on
synthetic documents of varied lengths (50 to 3,000 words); bf16; sequences of 2,048 tokens.

  plain: the Trainer script users write (run_clm's group_texts: documents joined with EOS
         and cut into 2,048-token chunks, DataCollatorForLanguageModeling(mlm=False), default
         TrainingArguments with bf16): documents attend to each other, nothing is packing-aware;
  ours:  cpt_studio.core.training.train on a run folder: packed documents kept apart by the
         attention kernel the run chooses (flash attention, else FlexAttention, else SDPA),
         fused AdamW, Liger where installed, checkpointing only when the memory estimate
         needs it, per-step events, evaluation at step 0 and the end, a final checkpoint.

For each of full and LoRA (r=16 on every linear layer of the blocks): tokens/s (median of the
steps after --warmup), MFU (PaLM's model FLOPs / the GPU's dense bf16 peak,
cpt_studio.core.estimate) and peak GPU memory, side by side with ours / plain; our held-out
evaluation's tokens/s (cpt_studio.core.evaluation.heldout_perplexity at eval.batch_size) and
its ratio to training; and the forward+backward speed of each attention kernel on packed rows.
The issue's targets are printed beside the figures: LoRA ours >= 1.5x plain; full-parameter
MFU >= 40%; evaluation >= 3x training tokens/s.

--smoke runs the same code on the CPU with a tiny model and a few short steps, to prove the
script runs (its figures mean nothing, and it says so). On the GPU the whole bench is sized to
finish in under 5 minutes (bench/gpu_check.sh runs it with the CUDA tests).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=4096, rope_theta=1e6)
"""Qwen2.5-0.5B's shape (494 M parameters with tied embeddings)."""
SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=2048, max_position_embeddings=512)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --- the model and the corpus --------------------------------------------------------------

def synthetic_documents(count: int, seed: int, longest: int) -> list[str]:
    """`count` documents of 50 to `longest` words drawn from a 6,000-word pseudo-vocabulary."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    words = ["".join(rng.choice(letters[:rng.randint(8, 26)]) for _ in range(rng.randint(2, 9)))
             for _ in range(6000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(50, longest))) + "."
            for _ in range(count)]


def build_model(folder: Path, shape: dict, texts: list[str], vocab: int) -> Path:
    """A Llama of `shape` with random weights and a tokenizer trained on `texts`, saved as an HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from cpt_studio.core.testing.tiny_model import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(vocab, texts[:400])
    config = LlamaConfig(**shape, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- measuring -----------------------------------------------------------------------------

def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def peak_flops() -> float | None:
    from cpt_studio.core.estimate import gpu_peak_flops

    return gpu_peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None


def model_flops_per_token(model, method: str, seq_len: int) -> float:
    from cpt_studio.core.estimate import training_flops_per_token

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    parameters = sum(p.numel() for name, p in base.named_parameters() if "lora_" not in name)
    return training_flops_per_token(parameters=parameters, method=method, num_layers=config.num_hidden_layers,
                                    hidden_size=config.hidden_size, seq_len=seq_len)


def figures(speeds: list[float], per_token: float, memory: float | None) -> dict:
    from cpt_studio.core.estimate import model_flops_utilisation

    speed = statistics.median(speeds)
    return {"tokens_per_second": speed, "mfu": model_flops_utilisation(speed, per_token, peak_flops()),
            "peak_memory_gib": memory, "steps_timed": len(speeds)}


# --- (a) the plain Trainer script --------------------------------------------------------------

def plain(model_dir: Path, texts: list[str], method: str, args, out: Path) -> dict:
    """The run_clm-style script, timed per optimizer step after `args.warmup` steps."""
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids: list[int] = []
    for encoded in tokenizer(texts)["input_ids"]:
        ids += encoded + [tokenizer.eos_token_id]
    chunks = [{"input_ids": ids[i:i + args.seq_len]} for i in range(0, len(ids) - args.seq_len + 1, args.seq_len)]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS,
                                                 task_type="CAUSAL_LM"))
    steps = args.warmup + args.steps
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync()
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            sync()
            times.append(time.perf_counter() - self.started)

    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.micro_batch, max_steps=steps,
        learning_rate=2e-5 if method == "full" else 2e-4, bf16=not args.smoke, use_cpu=args.smoke,
        save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=10)
    peak_memory_reset()
    trainer = Trainer(model=model, args=training_args, train_dataset=chunks, callbacks=[Timer()],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    tokens = args.micro_batch * args.seq_len
    result = figures([tokens / t for t in times[args.warmup:]], model_flops_per_token(model, method, args.seq_len),
                     peak_memory_gib())
    result["optimizer"] = str(training_args.optim)
    del trainer, model
    return result


# --- (b) our run --------------------------------------------------------------------------

def ours(model_dir: Path, corpus: Path, method: str, args, root: Path) -> tuple[dict, object]:
    """Our run on a run folder; its step events' tokens/s and MFU after `args.warmup` steps.
    Returns (figures, the run's model as trained, for the evaluation bench)."""
    from cpt_studio.core.config import (
        BatchConfig,
        CheckpointConfig,
        CorpusConfig,
        EvalConfig,
        MethodConfig,
        ModelConfig,
        RunConfig,
        ScheduleConfig,
    )
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.runs import create_run
    from cpt_studio.core.testing.run_helpers import events_of
    from cpt_studio.core.training import train

    steps = args.warmup + args.steps
    kind = MethodConfig(kind="lora", lora_rank=16, lora_alpha=32, target_modules=LORA_TARGETS) \
        if method == "lora" else MethodConfig()
    config = RunConfig(
        name=f"bench-{method}", model=ModelConfig(str(model_dir)),
        corpus=CorpusConfig(domain=[SourceSpec(str(corpus))], replay_ratio=0.0), method=kind,
        schedule=ScheduleConfig(max_steps=steps, peak_lr=2e-5 if method == "full" else 2e-4, warmup_ratio=0.1),
        batch=BatchConfig(micro_batch=args.micro_batch, grad_accum=1, seq_len=args.seq_len),
        eval=EvalConfig(interval=steps, heldout_count=16, max_tokens=64 * args.seq_len),
        checkpoints=CheckpointConfig(interval=steps, keep=1))
    run_dir = create_run(config, root)
    peak_memory_reset()
    state = train(run_dir)
    memory = peak_memory_gib()
    events = events_of(run_dir)
    step_events = [e for e in events if e["type"] == "step"][args.warmup:]
    kernels = next((e["message"] for e in events if e["type"] == "log" and e["message"].startswith("kernels:")), "")
    result = {"state": state, "kernels": kernels,
              **figures([e["tokens_per_second"] for e in step_events], 0.0, memory)}
    mfus = [e["mfu"] for e in step_events if e.get("mfu") is not None]
    result["mfu"] = statistics.median(mfus) if mfus else None
    return result, run_dir


def evaluation_speed(run_dir: Path, args) -> dict:
    """Tokens/s of our held-out perplexity (cpt_studio.core.evaluation) on the run's final
    checkpoint with the run's attention kernel, batch and precision, on packed rows of seq_len."""
    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.evaluation import heldout_perplexity
    from cpt_studio.core.models import load_model_and_tokenizer
    from cpt_studio.core.recipe import resolve_hardware
    from cpt_studio.core.run_folder import RunPaths, last_checkpoint

    config = RunConfig.load(RunPaths(run_dir).config)
    hardware = resolve_hardware(config)
    model, _ = load_model_and_tokenizer(str(last_checkpoint(run_dir)), attn_implementation=hardware.attention)
    model.to(hardware.device)
    rows = packed_rows(64 if not args.smoke else 8, args.seq_len, model.config.vocab_size, seed=1)
    heldout_perplexity(model, rows[:config.eval.batch_size], config.eval.batch_size, hardware.autocast_dtype)
    sync()
    started = time.perf_counter()
    result = heldout_perplexity(model, rows, config.eval.batch_size, hardware.autocast_dtype)
    sync()
    seconds = time.perf_counter() - started
    del model
    return {"tokens_per_second": len(rows) * args.seq_len / seconds, "batch_size": config.eval.batch_size,
            "rows": len(rows), "scored_tokens": result.tokens}


def packed_rows(count: int, seq_len: int, vocab: int, seed: int) -> list[dict]:
    """Rows of documents of 50 to 1,500 tokens laid end to end, position ids restarting at each."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(3, vocab, (seq_len,), generator=generator)
        lengths, left = [], seq_len
        while left:
            n = min(left, int(torch.randint(50, 1500, (1,), generator=generator)))
            lengths.append(n)
            left -= n
        positions = torch.cat([torch.arange(n) for n in lengths])
        rows.append({"input_ids": ids, "labels": ids.clone(), "position_ids": positions})
    return rows


# --- each attention kernel ----------------------------------------------------------------

def kernel_speeds(model_dir: Path, args) -> dict:
    """Forward + backward tokens/s of the full model on packed rows with each attention kernel
    this machine has (the batch flattened for flash attention, as the run does)."""
    from transformers import AutoModelForCausalLM

    from cpt_studio.core.packing import FLAT_ROW_KERNELS, collate_rows
    from cpt_studio.core.recipe import flash_attn_installed

    kernels = ["sdpa", "eager"] + (["flex_attention"] if not args.smoke else [])
    kernels += ["flash_attention_2"] if flash_attn_installed() and not args.smoke else []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = packed_rows(args.micro_batch, args.seq_len, 1000, seed=2)
    speeds = {}
    for kernel in kernels:
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=kernel).to(device)
            batch = {k: v.to(device) for k, v in collate_rows(rows, flat=kernel in FLAT_ROW_KERNELS).items()}
            times = []
            for i in range(3 + (2 if args.smoke else 5)):
                sync()
                started = time.perf_counter()
                with torch.autocast(device, dtype=torch.bfloat16, enabled=not args.smoke):
                    model(**batch, use_cache=False).loss.backward()
                sync()
                if i >= 3:
                    times.append(time.perf_counter() - started)
            speeds[kernel] = args.micro_batch * args.seq_len / statistics.median(times)
            del model
        except Exception as error:  # noqa: BLE001 — a kernel this machine cannot run is reported, not fatal
            speeds[kernel] = f"failed: {type(error).__name__}: {str(error)[:200]}"
    return speeds


# --- the report ---------------------------------------------------------------------------

def report(results: dict, args) -> str:
    lines = [f"{'smoke run on the CPU: the figures below mean nothing' if args.smoke else results['device']}: "
             f"{results['parameters'] / 1e6:.0f} M parameters, {args.micro_batch} x {args.seq_len} tokens a step, "
             f"{args.steps} steps timed after {args.warmup}", ""]
    lines.append(f"{'':<6}{'':<6}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}")
    for method in ("full", "lora"):
        for who in ("plain", "ours"):
            r = results[method][who]
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
            memory = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") is not None else "-"
            lines.append(f"{method:<6}{who:<6}{r['tokens_per_second']:>12,.0f}{mfu:>8}{memory:>10}")
        ratio = results[method]["ours"]["tokens_per_second"] / results[method]["plain"]["tokens_per_second"]
        results[method]["ratio"] = ratio
        lines.append(f"{method:<6}ours / plain = {ratio:.2f}x")
    full_mfu = results["full"]["ours"].get("mfu")
    evaluation = results["evaluation"]["tokens_per_second"] / results["full"]["ours"]["tokens_per_second"]
    results["evaluation"]["ratio_to_training"] = evaluation
    lines += ["", f"held-out evaluation: {results['evaluation']['tokens_per_second']:,.0f} tokens/s = "
                  f"{evaluation:.1f}x full training (batch {results['evaluation']['batch_size']})",
              f"our kernels: {results['full']['ours']['kernels']}", "",
              "attention kernels, forward + backward on packed rows (tokens/s):"]
    lines += [f"  {k:<18}{v:>12,.0f}" if isinstance(v, float) else f"  {k:<18}{v}" for k, v in results["kernels"].items()]
    targets = [("LoRA ours >= 1.5x plain", results["lora"]["ratio"] >= 1.5),
               ("full-parameter MFU >= 40%", full_mfu is not None and full_mfu >= 0.40),
               ("evaluation >= 3x training tokens/s", evaluation >= 3)]
    lines += ["", "targets (issue 18):"] + [f"  {'met   ' if ok else 'NOT met'} {what}" for what, ok in targets]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps timed")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU run proving the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.seq_len, args.micro_batch = 3, 2, 128, 2
    elif not torch.cuda.is_available():
        print("no CUDA GPU: this bench measures GPU speed (use --smoke to check it runs)", file=sys.stderr)
        return 2
    shape = SMOKE_SHAPE if args.smoke else SHAPE
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CPT_STUDIO_HOME"] = str(tmp / "home")
        texts = synthetic_documents(150 if args.smoke else 400, seed=1, longest=400 if args.smoke else 3000)
        corpus = tmp / "domain.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        model_dir = build_model(tmp / "model", shape, texts, 1000 if args.smoke else 8000)
        results: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                         "torch": torch.__version__, "smoke": args.smoke}
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            results["parameters"] = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).num_parameters()
        for method in ("full", "lora"):
            results[method] = {"plain": plain(model_dir, texts, method, args, tmp / f"plain-{method}")}
            results[method]["ours"], run_dir = ours(model_dir, corpus, method, args, tmp / f"runs-{method}")
            if method == "full":
                results["evaluation"] = evaluation_speed(run_dir, args)
            print(f"[{time.perf_counter() - started:.0f} s] {method} done", flush=True)
        results["kernels"] = kernel_speeds(model_dir, args)
    results["seconds"] = time.perf_counter() - started
    print(report(results, args))
    print(f"\n(bench took {results['seconds']:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
