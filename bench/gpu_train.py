"""GPU training speed: our run against the plain Trainer script, full and LoRA, on one GPU.

    python bench/gpu_train.py [--out figures.json] [--steps 40] [--smoke]

Model: about 0.5 B parameters, Qwen2.5-0.5B's shape as a Llama (hidden 896, 24 layers,
intermediate 4864, 14 heads, 2 KV heads, vocabulary 151,936, tied embeddings) with random
weights built from its config (no download), and a byte-level BPE tokenizer trained here on
synthetic documents of varied lengths (50 to 3,000 words); bf16; sequences of 2,048 tokens.

  plain: the Trainer script users write (run_clm's group_texts: documents joined with EOS
         and cut into 2,048-token chunks, DataCollatorForLanguageModeling(mlm=False), default
         TrainingArguments with bf16, whose optimizer is fused AdamW since transformers 5):
         documents attend to each other, nothing is packing-aware;
  ours:  cpt_studio.core.training.train on a run folder: packed documents kept apart by the
         attention kernel the run chooses (flash attention, else FlexAttention, else SDPA),
         fused AdamW, Liger where installed, checkpointing only when the memory estimate
         needs it, per-step events, evaluation at step 0 and the end, a final checkpoint.

For each of full and LoRA (r=16 on every linear layer of the blocks): tokens/s, MFU (PaLM's
model FLOPs / the GPU's dense bf16 peak, cpt_studio.core.estimate, the same FLOPs per token for
both) and peak GPU memory, side by side with ours / plain. Both are timed alike: the median
time between consecutive optimizer steps' ends after --warmup steps (plain: a callback that
synchronises the GPU; ours: the step events, written after the step's loss is read back, so
after the GPU finished it), everything a step costs included (batch loading, logging, our
callbacks), the steps that evaluated left out. Our peak memory is the training's, without the
evaluations at step 0 and the end (their peak is reported apart). Then our held-out
evaluation's tokens/s (cpt_studio.core.evaluation.heldout_perplexity on the run's final
checkpoint, its kernel and precision) at the run's eval.batch_size, its ratio to training, and
at other batch sizes; and the forward+backward speed of each attention kernel on packed rows.
The issue's targets are printed beside the figures: LoRA ours >= 1.5x plain; full-parameter
MFU >= 40%; evaluation >= 3x training tokens/s.

Each part is timed and written to --out as soon as it is done, and a part that fails is
reported (its error in the JSON) without stopping the others: one GPU call gives everything it
can. The parts after the four trainings (evaluation batch sizes other than the run's, kernel
speeds) are skipped once --budget seconds have passed.

--smoke runs the same code on the CPU with a tiny model and a few short steps, to prove the
script runs (its figures mean nothing, and it says so). On the GPU the whole bench is sized to
finish in under 5 minutes (bench/gpu_check.sh runs it with the CUDA tests).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
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


def release_memory() -> None:
    """What the last part left on the GPU freed before the next part measures its peak."""
    gc.collect()
    peak_memory_reset()


def peak_flops() -> float | None:
    from cpt_studio.core.estimate import gpu_peak_flops

    return gpu_peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None


def model_parameters(model_dir: Path) -> int:
    """The base model's parameters (tied embeddings once), counted on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).num_parameters()


def model_flops_per_token(model_dir: Path, method: str, seq_len: int) -> float:
    """PaLM's model FLOPs of training on one token (cpt_studio.core.estimate), the same for
    the plain script and ours: LoRA's adapters are not counted, as the estimate says."""
    from transformers import AutoConfig

    from cpt_studio.core.estimate import training_flops_per_token

    config = AutoConfig.from_pretrained(model_dir)
    return training_flops_per_token(parameters=model_parameters(model_dir), method=method,
                                    num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                                    seq_len=seq_len)


def figures(step_seconds: list[float], tokens_per_step: int, per_token: float, memory: float | None) -> dict:
    """tokens/s and MFU of the median step time, and the peak memory (GiB, None on a CPU)."""
    from cpt_studio.core.estimate import model_flops_utilisation

    speed = tokens_per_step / statistics.median(step_seconds)
    return {"tokens_per_second": speed, "mfu": model_flops_utilisation(speed, per_token, peak_flops()),
            "peak_memory_gib": memory, "steps_timed": len(step_seconds)}


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
    ends: list[float] = []

    class Timer(TrainerCallback):
        """When each optimizer step ended, the GPU's work included."""

        def on_step_end(self, *a, **k):
            sync()
            ends.append(time.perf_counter())

    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.micro_batch, max_steps=steps,
        learning_rate=2e-5 if method == "full" else 2e-4, bf16=not args.smoke, use_cpu=args.smoke,
        save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=10)
    release_memory()
    trainer = Trainer(model=model, args=training_args, train_dataset=chunks, callbacks=[Timer()],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.train()
    seconds = [b - a for a, b in zip(ends[args.warmup - 1:], ends[args.warmup:], strict=False)]
    result = figures(seconds, args.micro_batch * args.seq_len, model_flops_per_token(model_dir, method, args.seq_len),
                     peak_memory_gib())
    result["optimizer"] = training_args.optim.value
    result["attention"] = model.config._attn_implementation
    del trainer, model
    release_memory()
    return result


# --- (b) our run --------------------------------------------------------------------------

def ours(model_dir: Path, corpus: Path, method: str, args, root: Path) -> tuple[dict, object]:
    """Our run on a run folder, timed by its step events after `args.warmup` steps.
    Returns (figures, the run's folder: its final checkpoint is the evaluation bench's model)."""
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
    memory: dict[str, float] = {}
    release_memory()
    with evaluations_measured_apart(memory):
        state = train(run_dir)
    training_peak = max(memory.get("training", 0.0), peak_memory_gib() or 0.0) if torch.cuda.is_available() else None
    events = events_of(run_dir)
    ends = {e["step"]: e["time"] for e in events if e["type"] == "step"}
    evaluated = {e["step"] for e in events if e["type"] == "eval"}
    seconds = [ends[s] - ends[s - 1] for s in range(args.warmup + 1, steps + 1)
               if s in ends and s - 1 in ends and s not in evaluated]
    kernels = next((e["message"] for e in events if e["type"] == "log" and e["message"].startswith("kernels:")), "")
    result = {"state": state, "kernels": kernels,
              **figures(seconds, args.micro_batch * args.seq_len, model_flops_per_token(model_dir, method, args.seq_len),
                        training_peak),
              "peak_memory_evaluating_gib": memory.get("evaluation")}
    live = [e["mfu"] for e in events if e["type"] == "step" and e["step"] > args.warmup and e.get("mfu") is not None]
    result["mfu_live"] = statistics.median(live) if live else None  # what the monitor showed
    release_memory()
    return result, run_dir


@contextmanager
def evaluations_measured_apart(memory: dict):
    """Our run's evaluations (step 0, the end) kept out of its training peak: the GPU's peak
    before each evaluation is memory["training"], during them memory["evaluation"] (GiB), and
    the peak is reset after each. The bench wraps RunMonitor.evaluate for this; nothing else
    of the run changes."""
    from cpt_studio.core.training import RunMonitor

    original = RunMonitor.evaluate

    def evaluate(self, model, step):
        if not torch.cuda.is_available():
            return original(self, model, step)
        sync()
        memory["training"] = max(memory.get("training", 0.0), peak_memory_gib())
        torch.cuda.reset_peak_memory_stats()  # not empty_cache: the run's allocations stay as they were
        try:
            return original(self, model, step)
        finally:
            sync()
            memory["evaluation"] = max(memory.get("evaluation", 0.0), peak_memory_gib())
            torch.cuda.reset_peak_memory_stats()

    RunMonitor.evaluate = evaluate
    try:
        yield
    finally:
        RunMonitor.evaluate = original


def evaluation_speed(run_dir: Path, args, batch_sizes: list[int], until: float) -> dict:
    """Tokens/s and peak memory of our held-out perplexity (cpt_studio.core.evaluation) on the
    run's final checkpoint with the run's attention kernel and precision, on packed rows of
    seq_len, at each of `batch_sizes` (the run's eval.batch_size first: the one it uses). Each
    size is run once untimed first (FlexAttention compiles its kernel for each batch shape);
    the sizes after the first are skipped once time.perf_counter() passes `until`."""
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
    result: dict = {"rows": len(rows), "batch_size": config.eval.batch_size, "attention": hardware.attention,
                    "by_batch_size": {}}
    for batch_size in dict.fromkeys([config.eval.batch_size, *batch_sizes]):
        if batch_size != config.eval.batch_size and time.perf_counter() > until:
            result["by_batch_size"][batch_size] = "skipped: over the bench's --budget"
            continue
        heldout_perplexity(model, rows[:batch_size], batch_size, hardware.autocast_dtype)
        release_memory()
        started = time.perf_counter()
        measured = heldout_perplexity(model, rows, batch_size, hardware.autocast_dtype)
        sync()
        seconds = time.perf_counter() - started
        result["by_batch_size"][batch_size] = {"tokens_per_second": len(rows) * args.seq_len / seconds,
                                               "peak_memory_gib": peak_memory_gib(), "loss": measured.loss}
        if batch_size == config.eval.batch_size:
            result.update(tokens_per_second=len(rows) * args.seq_len / seconds, scored_tokens=measured.tokens)
    del model
    release_memory()
    return result


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
    this machine has, documents kept apart (position ids restarting; the batch flattened for
    flash attention, as the run does); and, for reference, SDPA with one causal mask over each
    row (no position ids: documents see each other, as in the plain script), which SDPA runs on
    its flash backend."""
    from transformers import AutoModelForCausalLM

    from cpt_studio.core.packing import FLAT_ROW_KERNELS, collate_rows
    from cpt_studio.core.recipe import flash_attn_installed

    kernels = ["sdpa", "eager"] + (["flex_attention"] if not args.smoke else [])
    kernels += ["flash_attention_2"] if flash_attn_installed() and not args.smoke else []
    cases = [(kernel, kernel, True) for kernel in kernels] + [("sdpa, documents not apart", "sdpa", False)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = packed_rows(args.micro_batch, args.seq_len, 1000, seed=2)
    speeds = {}
    for name, kernel, apart in cases:
        try:
            model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=kernel).to(device)
            batch = {k: v.to(device) for k, v in collate_rows(rows, flat=kernel in FLAT_ROW_KERNELS).items()
                     if apart or k != "position_ids"}
            times = []
            for i in range(3 + (2 if args.smoke else 5)):
                sync()
                started = time.perf_counter()
                with torch.autocast(device, dtype=torch.bfloat16, enabled=not args.smoke):
                    model(**batch, use_cache=False).loss.backward()
                sync()
                if i >= 3:
                    times.append(time.perf_counter() - started)
            speeds[name] = args.micro_batch * args.seq_len / statistics.median(times)
        except Exception as error:  # noqa: BLE001 — a kernel this machine cannot run is reported, not fatal
            speeds[name] = f"failed: {type(error).__name__}: {str(error)[:200]}"
        model = batch = None
        release_memory()
    return speeds


# --- the report ---------------------------------------------------------------------------

def report(results: dict, args) -> str:
    """The figures side by side, the ratios and the issue's targets; '-' where a part gave none."""
    def number(value, form: str) -> str:
        return "-" if value is None else format(value, form)

    head = "smoke run on the CPU: the figures below mean nothing" if args.smoke else results["device"]
    lines = [f"{head}: {number(results.get('parameters', 0) / 1e6, '.1f')} M parameters, {args.micro_batch} x "
             f"{args.seq_len} tokens a step, {args.steps} steps timed after {args.warmup}", "",
             f"{'':<12}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}   optimizer / kernels"]
    for method in ("full", "lora"):
        for who in ("plain", "ours"):
            r = results.get(method, {}).get(who) or {}
            how = r.get("optimizer", "") + f", {r.get('attention', '')}" if who == "plain" else \
                r.get("kernels", "").removeprefix("kernels: ").split(";")[0]
            lines.append(f"{method + ' ' + who:<12}{number(r.get('tokens_per_second'), ',.0f'):>12}"
                         f"{number(r.get('mfu'), '.1%'):>8}{number(r.get('peak_memory_gib'), '.1f'):>10}   {how}")
        speeds = [(results.get(method, {}).get(who) or {}).get("tokens_per_second") for who in ("plain", "ours")]
        ratio = speeds[1] / speeds[0] if None not in speeds else None
        results.setdefault(method, {})["ratio"] = ratio
        lines.append(f"{method:<12}ours / plain = {number(ratio, '.2f')}x")
    ours_full = (results.get("full") or {}).get("ours") or {}
    if ours_full:
        lines.append(f"our full run: live MFU as the monitor showed it {number(ours_full.get('mfu_live'), '.1%')}; "
                     f"peak while evaluating {number(ours_full.get('peak_memory_evaluating_gib'), '.1f')} GiB")
    evaluation = results.get("evaluation") or {}
    training = ours_full.get("tokens_per_second")
    ratio = evaluation["tokens_per_second"] / training if evaluation and training else None
    if evaluation:
        evaluation["ratio_to_training"] = ratio
        lines += ["", f"held-out evaluation: {evaluation['tokens_per_second']:,.0f} tokens/s = {number(ratio, '.1f')}x "
                      f"full training (batch {evaluation['batch_size']}, {evaluation['attention']})"]
        for size, r in evaluation["by_batch_size"].items():
            lines.append(f"  batch {size:>3}: " + (r if isinstance(r, str) else
                         f"{r['tokens_per_second']:>12,.0f} tokens/s, peak {number(r['peak_memory_gib'], '.1f')} GiB"))
    ours_any = ours_full or (results.get("lora") or {}).get("ours") or {}
    lines += ["", f"our kernels: {ours_any.get('kernels', '-')}"]
    if results.get("kernels"):
        lines += ["", "attention kernels, forward + backward on packed rows (tokens/s):"]
        lines += [f"  {k:<28}{v:>12,.0f}" if isinstance(v, float) else f"  {k:<28}{v}"
                  for k, v in results["kernels"].items()]
    full_mfu, lora_ratio = ours_full.get("mfu"), results.get("lora", {}).get("ratio")
    targets = [("LoRA ours >= 1.5x plain", lora_ratio is not None and lora_ratio >= 1.5),
               ("full-parameter MFU >= 40%", full_mfu is not None and full_mfu >= 0.40),
               ("evaluation >= 3x training tokens/s", ratio is not None and ratio >= 3)]
    lines += ["", "targets (issue 18):"] + [f"  {'not judged (smoke)' if args.smoke else 'met    ' if ok else 'NOT met'}"
                                           f" {what}" for what, ok in targets]
    if results.get("errors"):
        lines += ["", "parts that failed or were skipped (the JSON has each error):"]
        lines += [f"  {name}: {error.strip().splitlines()[-1]}" for name, error in results["errors"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps timed")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--budget", type=float, default=210,
                        help="seconds after which the optional parts (other evaluation batch sizes, kernel speeds) are skipped")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here (after each part)")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU run proving the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.seq_len, args.micro_batch = 3, 2, 128, 2
    elif not torch.cuda.is_available():
        print("no CUDA GPU: this bench measures GPU speed (use --smoke to check it runs)", file=sys.stderr)
        return 2
    shape = SMOKE_SHAPE if args.smoke else SHAPE
    started = time.perf_counter()
    results: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                     "torch": torch.__version__, "smoke": args.smoke, "seconds_by_part": {}, "errors": {}}

    def part(name: str, measure, *, optional: bool = False):
        """Run one part: its seconds and any error recorded, the JSON written after it."""
        elapsed = time.perf_counter() - started
        if optional and elapsed > args.budget:
            results["errors"][name] = f"skipped: {elapsed:.0f} s had passed (--budget {args.budget:.0f})"
            return None
        try:
            return measure()
        except Exception as error:  # noqa: BLE001 — one part's failure must not cost the others' figures
            results["errors"][name] = "".join(traceback.format_exception(error))[-3000:]
            print(f"{name} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return None
        finally:
            results["seconds_by_part"][name] = time.perf_counter() - started - elapsed
            results["seconds"] = time.perf_counter() - started
            print(f"[{results['seconds']:.0f} s] {name} done", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CPT_STUDIO_HOME"] = str(tmp / "home")
        texts = synthetic_documents(150 if args.smoke else 400, seed=1, longest=400 if args.smoke else 3000)
        corpus = tmp / "domain.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        model_dir = part("model", lambda: build_model(tmp / "model", shape, texts, 1000 if args.smoke else 8000))
        if model_dir is None:
            print(report(results, args))
            return 1
        results["parameters"] = model_parameters(model_dir)
        run_dirs = {}
        for method in ("full", "lora"):
            results[method] = {}
            results[method]["plain"] = part(f"{method} plain", lambda method=method: plain(
                model_dir, texts, method, args, tmp / f"plain-{method}"))
            ours_run = part(f"{method} ours", lambda method=method: ours(
                model_dir, corpus, method, args, tmp / f"runs-{method}"))
            if ours_run is not None:
                results[method]["ours"], run_dirs[method] = ours_run
        if "full" in run_dirs:
            results["evaluation"] = part("evaluation", lambda: evaluation_speed(
                run_dirs["full"], args, [2, 4] if args.smoke else [4, 16], until=started + args.budget))
        results["kernels"] = part("kernels", lambda: kernel_speeds(model_dir, args), optional=True)
    print(report(results, args))
    print(f"\n(bench took {results['seconds']:.0f} s)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    return 1 if any(not e.startswith("skipped") for e in results["errors"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
