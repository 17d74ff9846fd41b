"""EWC strength sweep where forgetting is real: the tiny test model on two corpora with no
word in common, no replay, a high LR (the guard test's setting).

    python bench/ewc_strength.py [--strengths 0,0.003,0.03,0.3,3,30] [--steps 20]

For each strength: the domain gain and the forgetting at the end and their worst/best over
the evaluations (every 5 steps), and the penalty at the last step. The first run (no EWC)
also gives the balance strength, as bench/forgetting.py measures it on the demo model:
median grad norm of the last steps / ||F (theta_end - theta*)|| with the mean-1 Fisher. The
two benches together are the measurement behind EwcConfig.strength's default (core/ewc.py).
Seconds on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path


def one_run(model_dir: Path, data: Path, root: Path, strength: float, steps: int) -> dict:
    from cpt_studio.core.config import (
        CheckpointConfig,
        EvalConfig,
        EwcConfig,
        GuardConfig,
        ScheduleConfig,
    )
    from cpt_studio.core.runs import create_run
    from cpt_studio.core.testing.run_helpers import events_of, tiny_run_config
    from cpt_studio.core.training import train

    config = tiny_run_config(model_dir, data / "unused",
                             schedule=ScheduleConfig(peak_lr=5e-3, max_steps=steps, warmup_ratio=0),
                             eval=EvalConfig(interval=5, heldout_count=8),
                             checkpoints=CheckpointConfig(interval=steps, keep=1),
                             guard=GuardConfig(enabled=False),
                             ewc=EwcConfig(enabled=strength > 0, strength=strength, sequences=32))
    config.corpus.domain[0].path = str(data / "domain.jsonl")
    config.corpus.general[0].path = str(data / "general.jsonl")
    config.corpus.replay_ratio = 0.0
    run_dir = create_run(config, root)
    train(run_dir)
    evals, steps_ = events_of(run_dir, "eval"), events_of(run_dir, "step")
    return {"strength": strength, "run_dir": run_dir, "config": config,
            "gain": evals[-1]["domain_gain"], "forgetting": evals[-1]["forgetting"],
            "max_forgetting": max(e["forgetting"] for e in evals),
            "penalty": steps_[-1].get("ewc_penalty"), "loss": steps_[-1]["loss"],
            "grad_norm": statistics.median(e["grad_norm"] for e in steps_[-5:])}


def balance(run: dict) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    from cpt_studio.core.config import EwcConfig
    from cpt_studio.core.data import prepare_run_data
    from cpt_studio.core.ewc import prepare_ewc
    from cpt_studio.core.models import load_model_and_tokenizer
    from cpt_studio.core.run_folder import list_checkpoints

    config = run["config"]
    model, tokenizer = load_model_and_tokenizer(config.model.name_or_path)
    data = prepare_run_data(config.corpus, config.eval, tokenizer, run["run_dir"],
                            seq_len=config.batch.seq_len, seed=config.seed)
    state = prepare_ewc(model, data.general.train, EwcConfig(enabled=True, sequences=32),
                        general_key=data.general.store.meta["key"], seq_len=config.batch.seq_len,
                        seed=config.seed, precision="fp32")
    final = dict(AutoModelForCausalLM.from_pretrained(list_checkpoints(run["run_dir"])[-1]).named_parameters())
    pull = sum(float(((f * (final[n].detach() - state.reference[n])) ** 2).sum())
               for n, f in state.fisher.items()) ** 0.5
    return run["grad_norm"] / pull, pull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strengths", default="0,0.003,0.03,0.3,3,30")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from cpt_studio.core.testing.corpus_files import write_distant_corpus
    from cpt_studio.core.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CPT_STUDIO_HOME"] = str(tmp / "home")
        model_dir = build_tiny_model(tmp / "model")
        write_distant_corpus(tmp)
        runs = [one_run(model_dir, tmp, tmp / "runs", float(s), args.steps) for s in args.strengths.split(",")]
        print(f"\ntiny model, distant corpora, LR 5e-3, no replay, {args.steps} steps of 20 x 64 tokens")
        print(f"{'strength':>9} {'domain gain':>12} {'forgetting':>11} {'max forg.':>10} {'penalty':>9} {'loss':>7}")
        for r in runs:
            penalty = f"{r['penalty']:.3g}" if r["penalty"] is not None else "-"
            print(f"{r['strength']:>9g} {r['gain']:>+12.1%} {r['forgetting']:>+11.1%} "
                  f"{r['max_forgetting']:>+10.1%} {penalty:>9} {r['loss']:>7.3f}")
        if runs[0]["strength"] == 0:
            strength, pull = balance(runs[0])
            print(f"balance strength: median grad norm {runs[0]['grad_norm']:.3f} / "
                  f"||F (theta_end - theta*)|| {pull:.4g} = {strength:.3g}")


if __name__ == "__main__":
    main()
