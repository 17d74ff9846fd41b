"""Forgetting defences on the demo model: no defence, replay, replay + EWC.

    CPT_STUDIO_HOME=/tmp/demohome python bench/forgetting.py [--steps 20] [--fisher-sequences 32]

Three short full-parameter runs of the demo model (SmolLM2-135M) on the demo corpus
(resources/demo), 4 x 256 tokens a step, each by the real worker in its own process:
  none        LR 1e-4, no replay, no EWC
  replay      LR 2e-5, 5% replay
  replay+ewc  LR 2e-5, 5% replay, EWC on all weights (default strength, Fisher on
              --fisher-sequences general sequences, computed once and cached)
The guard is off in all three: this measures the defences themselves. Printed:
  * domain gain and forgetting at the last step of each run (held-out perplexity against
    the step-0 baseline), and the best domain gain over the run's evaluations;
  * EWC's per-step overhead: median milliseconds per training step of replay+ewc over replay
    (the same settings otherwise; evaluation and the Fisher are outside the step times);
  * the balance strength: median gradient norm of replay's last steps over
    ||F (theta_end - theta*)|| (Fisher scaled to mean 1, theta_end the replay run's final
    weights). At that lambda the penalty's pull on the weights equals the data's push, in
    norm, by the end of such a run: the measurement behind EwcConfig.strength's default.
--runs picks a subset, --strength overrides lambda for the EWC run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RUNS = {
    "none": {"peak_lr": 1e-4, "replay_ratio": 0.0, "ewc": False},
    "replay": {"peak_lr": 2e-5, "replay_ratio": 0.05, "ewc": False},
    "replay+ewc": {"peak_lr": 2e-5, "replay_ratio": 0.05, "ewc": True},
}


def run_config(name: str, steps: int, fisher_sequences: int, strength: float | None):
    from cpt_studio.core.config import CheckpointConfig, EvalConfig, EwcConfig, GuardConfig
    from cpt_studio.core.demo import demo_config

    setting = RUNS[name]
    config = demo_config(steps)
    config.name = f"forgetting-{name}"
    config.schedule.peak_lr = setting["peak_lr"]
    config.corpus.replay_ratio = setting["replay_ratio"]
    config.eval = EvalConfig(interval=max(1, steps // 2), heldout_count=8, batch_size=8)
    config.checkpoints = CheckpointConfig(interval=steps, keep=1)  # the final weights only
    config.guard = GuardConfig(enabled=False)
    if setting["ewc"]:
        config.ewc = EwcConfig(enabled=True, sequences=fisher_sequences)
        if strength is not None:
            config.ewc.strength = strength
    return config


def run(name: str, args, root: Path) -> dict:
    """One run by the worker, in its own process; its numbers from the events."""
    from cpt_studio.core.events import read_events
    from cpt_studio.core.run_folder import RunPaths
    from cpt_studio.core.runs import create_run, start_worker

    config = run_config(name, args.steps, args.fisher_sequences, args.strength)
    run_dir = create_run(config, root)
    started = time.monotonic()
    code = start_worker(run_dir).wait()
    if code:
        raise SystemExit(f"{name}: the worker failed; see {RunPaths(run_dir).log}")
    events = read_events(RunPaths(run_dir).events)[0]
    evals = [e for e in events if e["type"] == "eval"]
    steps = [e for e in events if e["type"] == "step"]
    tokens_per_step = config.batch.micro_batch * config.batch.grad_accum * config.batch.seq_len
    step_ms = [1000 * tokens_per_step / e["tokens_per_second"] for e in steps[1:]]  # the first pays setup
    fisher = [e for e in events if e.get("phase") == "fisher"]
    return {"name": name, "run_dir": str(run_dir), "config": config.to_dict(),
            "domain_gain": evals[-1]["domain_gain"], "forgetting": evals[-1]["forgetting"],
            "best_gain": max(e["domain_gain"] for e in evals),
            "max_forgetting": max(e["forgetting"] for e in evals),
            "ms_per_step": statistics.median(step_ms), "wall_s": time.monotonic() - started,
            "fisher_s": fisher[-1]["time"] - fisher[0]["time"] if fisher else None,
            "grad_norm": statistics.median(e["grad_norm"] for e in steps[-5:]),
            "loss": [e["loss"] for e in steps], "ewc_penalty": [e.get("ewc_penalty") for e in steps]}


def balance_strength(replay: dict, fisher_sequences: int) -> tuple[float, float]:
    """(median grad norm / ||F (theta_end - theta*)||, ||F (theta_end - theta*)||) for the
    replay run, with the mean-1 Fisher the EWC run cached (computed here if absent)."""
    from transformers import AutoModelForCausalLM

    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.data import prepare_run_data
    from cpt_studio.core.ewc import prepare_ewc
    from cpt_studio.core.models import load_model_and_tokenizer
    from cpt_studio.core.run_folder import list_checkpoints

    config = RunConfig.from_dict(replay["config"])
    config.ewc.enabled, config.ewc.sequences = True, fisher_sequences
    model, tokenizer = load_model_and_tokenizer(config.model.name_or_path, attn_implementation="sdpa")
    model.config.use_cache = False
    data = prepare_run_data(config.corpus, config.eval, tokenizer, Path(replay["run_dir"]),
                            seq_len=config.batch.seq_len, seed=config.seed)
    state = prepare_ewc(model, data.general.train, config.ewc, general_key=data.general.store.meta["key"],
                        seq_len=config.batch.seq_len, seed=config.seed, precision="fp32")
    fisher = state.fisher  # scaled to mean 1 (EwcConfig.normalisation's default)
    final = AutoModelForCausalLM.from_pretrained(list_checkpoints(Path(replay["run_dir"]))[-1])
    moved = dict(final.named_parameters())
    squared = sum(float(((fisher[n] * (moved[n].detach() - state.reference[n])) ** 2).sum())
                  for n in fisher)
    pull = squared ** 0.5
    return replay["grad_norm"] / pull, pull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fisher-sequences", type=int, default=32)
    parser.add_argument("--strength", type=float, default=None, help="EWC lambda (default: the config's)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    if "CPT_STUDIO_HOME" not in os.environ:
        print("note: CPT_STUDIO_HOME is unset; the demo model is imported into the default data folder")
    from cpt_studio.core.models import demo_model_path
    from cpt_studio.core.paths import data_dir

    demo_model_path()  # import the demo model once, before the runs start
    root = data_dir() / "bench-forgetting"
    load = os.getloadavg()
    print(f"{args.steps} steps of 4 x 256 tokens per run, CPU, {os.cpu_count()} cores; "
          f"load average at start {load[0]:.2f}")
    results = [run(name, args, root) for name in args.runs.split(",")]
    by_name = {r["name"]: r for r in results}
    print(f"\n{'run':<12} {'LR':>7} {'replay':>7} {'EWC':>5} {'domain gain':>12} {'forgetting':>11} "
          f"{'best gain':>10} {'max forg.':>10} {'ms/step':>8} {'wall s':>7}")
    for r in results:
        s = RUNS[r["name"]]
        ewc = f"{r['config']['ewc']['strength']:g}" if s["ewc"] else "-"
        print(f"{r['name']:<12} {s['peak_lr']:>7.0e} {s['replay_ratio']:>7.0%} {ewc:>5} "
              f"{r['domain_gain']:>+12.2%} {r['forgetting']:>+11.2%} {r['best_gain']:>+10.2%} "
              f"{r['max_forgetting']:>+10.2%} {r['ms_per_step']:>8.0f} {r['wall_s']:>7.0f}")
    if "replay" in by_name and "replay+ewc" in by_name:
        ratio = by_name["replay+ewc"]["ms_per_step"] / by_name["replay"]["ms_per_step"]
        print(f"\nEWC overhead: {by_name['replay+ewc']['ms_per_step']:.0f} / "
              f"{by_name['replay']['ms_per_step']:.0f} ms per step = {ratio:.3f} ({ratio - 1:+.1%}); "
              f"Fisher on {args.fisher_sequences} sequences: {by_name['replay+ewc']['fisher_s']:.0f} s (once, cached)")
        penalties = [p for p in by_name["replay+ewc"]["ewc_penalty"] if p is not None]
        print(f"EWC penalty at the last step: {penalties[-1]:.4g} (CPT loss {by_name['replay+ewc']['loss'][-1]:.4f})")
    if "replay" in by_name:
        strength, pull = balance_strength(by_name["replay"], args.fisher_sequences)
        print(f"balance strength: median grad norm {by_name['replay']['grad_norm']:.3f} / "
              f"||F (theta_end - theta*)|| {pull:.4g} = {strength:.3g}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
