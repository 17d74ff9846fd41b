"""Our evaluation against lm-eval's own command line: same tasks, same model, same scores.

    python bench/evaluate.py [--demo] [--probes FILE] [--limit N] [--repeat 2]

  ours:     `cpt-studio evaluate RUN --checkpoints 0 --probes FILE` on a run folder whose base
            model is the model (the CLI, its detached-capable worker process, the availability
            check, the probe tasks written into the run, events and the store);
  baseline: `lm_eval --model hf --model_args pretrained=FOLDER --tasks ... --include_path ...`
            on the same task YAML and data.
Both are separate processes timed from start to exit (Python, torch and lm-eval imports
included), best of --repeat, with a fresh data folder each time (no cached base scores).
Prints each metric from both, the wall times and our overhead as a ratio. We run one task per
harness call (progress per task, one failing task cannot sink the others); lm-eval's CLI given
all tasks batches their requests together, which moves summed log-likelihoods in the 7th digit,
so the scores are checked for identity against the CLI run once per task (the same requests in
the same batches), and the all-tasks run is shown beside them. The model is the tiny test model,
or with --demo the demo model (SmolLM2-135M).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
       "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "CPT_STUDIO_BOOTSTRAP_ITERS": "100000"}  # lm-eval's default, which its CLI uses


def model_folder(demo: bool, work: Path) -> Path:
    if demo:
        from cpt_studio.core.models import demo_model_path

        return demo_model_path()
    from cpt_studio.core.testing.tiny_model import build_tiny_model

    return build_tiny_model(work / "tiny-model")


def make_run(model: Path, work: Path, home: Path) -> Path:
    from cpt_studio.core.config import CorpusConfig, ModelConfig, RunConfig
    from cpt_studio.core.corpus import SourceSpec
    from cpt_studio.core.paths import resource_path
    from cpt_studio.core.runs import create_run

    os.environ["CPT_STUDIO_HOME"] = str(home)
    demo = resource_path("demo")
    config = RunConfig(name="bench-evaluate", model=ModelConfig(str(model)),
                       corpus=CorpusConfig(domain=[SourceSpec(str(demo / "domain.jsonl"))],
                                           general=[SourceSpec(str(demo / "general.jsonl"))]))
    return create_run(config, work / "runs")


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def ours(run_dir: Path, probes: Path, limit: int | None, home: Path) -> tuple[float, dict]:
    command = [sys.executable, "-m", "cpt_studio.core.cli", "evaluate", str(run_dir), "--checkpoints", "0",
               "--probes", str(probes), "--batch-size", "4"] + (["--limit", str(limit)] if limit else [])
    seconds = timed(command, {**ENV, "CPT_STUDIO_HOME": str(home)})
    progress = [json.loads(line) for line in (run_dir / "eval" / "events.jsonl").read_text().splitlines()]
    inside = progress[-1]["time"] - progress[0]["time"]
    scores = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "probe":
            scores[(event["task"], event["metric"])] = (event["value"], event["stderr"])
    return seconds, inside, scores


def baseline(model: Path, tasks_dir: Path, names: list[str], limit: int | None, out: Path) -> tuple[float, dict]:
    command = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={model}",
               "--tasks", ",".join(names), "--include_path", str(tasks_dir), "--batch_size", "4",
               "--num_fewshot", "0", "--device", "cpu",
               "--output_path", str(out)] + (["--limit", str(limit)] if limit else [])
    seconds = timed(command, ENV)
    [result] = list(out.rglob("results*.json"))
    data = json.loads(result.read_text())
    results, inside = data["results"], float(data["total_evaluation_time_seconds"])
    scores = {(task, key.split(",")[0]): (value, _number(row.get(key.replace(",", "_stderr,", 1))))
              for task, row in results.items() for key, value in row.items()
              if "," in key and "_stderr" not in key}
    return seconds, inside, scores


def _close(a, b) -> bool:
    """Standard errors: equal, or within 1e-9 relative (bootstrap chunks summed in another order)."""
    return a == b or (a is not None and b is not None and abs(a - b) <= 1e-9 * max(abs(a), abs(b)))


def _number(value):
    return value if isinstance(value, (int, float)) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="the demo model (SmolLM2-135M) instead of the tiny one")
    parser.add_argument("--probes", type=Path, default=None,
                        help="probe file (default: the demo's, shipped in the package)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.probes is None:
        from cpt_studio.core.paths import resource_path

        args.probes = resource_path("demo", "probes.jsonl")
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    model = model_folder(args.demo, work)
    times = {"ours": [], "lm_eval": []}
    inside = {"ours": [], "lm_eval": []}
    for attempt in range(args.repeat):
        home = work / f"home-{attempt}"
        run_dir = make_run(model, work, home)
        seconds, within, our_scores = ours(run_dir, args.probes, args.limit, home)
        times["ours"].append(seconds)
        inside["ours"].append(within)
        names = sorted({task for task, _ in our_scores})
        seconds, within, their_scores = baseline(model, run_dir / "eval" / "tasks", names, args.limit,
                                                 work / f"lm-eval-{attempt}")
        times["lm_eval"].append(seconds)
        inside["lm_eval"].append(within)
    print(f"model: {model}\nprobes: {args.probes} (limit {args.limit})")
    per_task = {}
    for name in names:  # the CLI once per task: the same batches as ours
        per_task.update(baseline(model, run_dir / "eval" / "tasks", [name], args.limit,
                                 work / f"lm-eval-{name}")[2])
    print(f"{'task':<14}{'metric':<12} {'ours':>24} {'lm_eval, per task':>24} {'lm_eval, all tasks':>24}  identical")
    identical = True
    for key in sorted(our_scores):
        mine, theirs = our_scores[key], per_task.get(key)
        same = theirs is not None and mine[0] == theirs[0] and _close(mine[1], theirs[1])
        identical &= same
        print(f"{key[0]:<14}{key[1]:<12} {_show(mine):>24} {_show(theirs):>24}"
              f" {_show(their_scores.get(key)):>24}  {'yes' if same else 'NO'}")
    best_ours, best_theirs = min(times["ours"]), min(times["lm_eval"])
    print(f"wall time, best of {args.repeat}: ours {best_ours:.1f} s, lm_eval CLI {best_theirs:.1f} s; "
          f"ratio {best_ours / best_theirs:.3f} (overhead {best_ours / best_theirs - 1:+.1%})")
    ours_in, theirs_in = min(inside["ours"]), min(inside["lm_eval"])
    print(f"evaluation proper (ours: the job's first to last progress event, model load and task "
          f"check included; lm_eval: its total_evaluation_time_seconds, which starts after its task "
          f"index and model load): ours {ours_in:.1f} s, lm_eval {theirs_in:.1f} s")
    print("scores identical" if identical else "SCORES DIFFER")
    return 0 if identical else 1


def _show(score) -> str:
    if score is None:
        return "-"
    value, stderr = score
    return f"{value:.10g}" + (f" ± {stderr:.3g}" if stderr is not None else "")


if __name__ == "__main__":
    sys.exit(main())
