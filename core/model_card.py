"""The model card (README.md) of an exported model: Hub metadata and the story of every stage
that made it, parent first (base -> CPT -> SFT).

    card = model_card(run_dir, 200, "merged", datasets=["pubmed"], tags=["medical"])
    card.save(folder / "README.md")                    # a huggingface_hub.ModelCard
    ModelCard.load(folder / "README.md").data.base_model   # "HuggingFaceTB/SmolLM2-135M"

The metadata (huggingface_hub.ModelCardData, written as the card's YAML header): base_model, the
original model at the root of the chain (a Hub id; a local folder is written as its name, and the
card says so), library_name (peft for an adapter, else transformers), pipeline_tag
text-generation, tags (cpt-studio, continual-pretraining, sft and lora when a stage used them,
then the user's) and the datasets the user names. The body, for each stage: its corpus sizes
(documents and tokens, read from the run's events), its settings, the perplexity and bits per
byte of every evaluation set at the base (step 0) and at the stage's checkpoint, domain gain and
forgetting, the benchmark and probe scores when the checkpoint was evaluated, and the guard's
decisions. Everything is read from the run folders, so a card can be written again at any time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .models import IMPORT_MARKER
from .report import task_tables
from .run_folder import RunPaths, read_json
from .sft_run import parent_of
from .timeline import RunTimeline

KINDS = {
    "full": "the full weights of the checkpoint",
    "merged": "the base model with the LoRA adapter(s) merged in: an ordinary transformers model",
    "adapter": "a LoRA adapter (load it with peft on its base model, named below)",
    "interpolated": "weights between the starting model's and the checkpoint's (see Interpolation below)",
}
"""What the exported folder holds, by export kind."""
BASE_TAGS = ("cpt-studio", "continual-pretraining")
SFT_SETS = {"domain": "held-out responses"}
"""An SFT run's "domain" set is its held-out examples, scored on their responses."""


@dataclass
class Stage:
    """One run of the chain and the checkpoint of it that the next stage (or the export) used."""

    run_dir: Path
    step: int
    config: dict
    events: list[dict] = field(default_factory=list)

    @property
    def is_sft(self) -> bool:
        return self.config.get("stage") == "sft"

    @property
    def is_lora(self) -> bool:
        return (self.config.get("method") or {}).get("kind") == "lora"


def run_chain(run_dir: Path | str, step: int) -> list[Stage]:
    """The stages that made the checkpoint at `step` of `run_dir`, parent first: each SFT run's
    parent (cpt_studio.core.sft_run.parent_of) up to a run without one. A parent whose folder
    is gone ends the walk (the chain then starts at the first run still on disk)."""
    stages, at = [], (Path(run_dir), step)
    while at is not None and RunPaths(at[0]).config.is_file():
        folder, at_step = at
        events = [e.to_dict() for e in RunTimeline.load(RunPaths(folder).events).events]
        stages.insert(0, Stage(folder, at_step, read_json(RunPaths(folder).config), events))
        parent = parent_of(folder)
        at = (Path(parent[0]), parent[1]) if parent else None
    return stages


def original_model(spec: str) -> tuple[str, str | None]:
    """(the name the card gives the model `spec`, a note or None): a Hub id as it is; a folder in
    the HF cache as its repo id; any other local path as its folder name, with a note saying so
    (and which GGUF file it was imported from, when it was)."""
    cached = re.search(r"models--([^/\\]+?)--([^/\\]+)", spec)
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}", None
    path = Path(spec).expanduser()
    if not (path.exists() or path.is_absolute() or spec.startswith(".")):
        return spec, None
    name = path.stem if path.suffix == ".gguf" else path.name
    note = f"`{name}` is a local model folder ({spec}), not a Hub id"
    marker = path / IMPORT_MARKER
    if marker.is_file():
        note += f"; it was imported from the GGUF file {read_json(marker).get('gguf_file')}"
    return name, note + "."


def card_data(stages: list[Stage], kind: str, datasets: list[str] = (), tags: list[str] = ()
              ) -> ModelCardData:
    """The card's metadata (see the module docstring). base_model is left out when it would
    mislead: a local folder is no Hub id (the Hub refuses the card's metadata), and an adapter
    of a chained run goes on the run's start model, not on the chain's base (the card's text
    says which model each needs)."""
    base, local = original_model(str(stages[0].config.get("model", {}).get("name_or_path", "")))
    if local or (kind == "adapter" and len(stages) > 1):
        base = None
    chain_tags = [*BASE_TAGS, *(["sft"] if any(s.is_sft for s in stages) else []),
                  *(["lora"] if any(s.is_lora for s in stages) else [])]
    return ModelCardData(base_model=base, library_name="peft" if kind == "adapter" else "transformers",
                         pipeline_tag="text-generation", datasets=list(datasets) or None,
                         tags=list(dict.fromkeys([*chain_tags, *tags])))


def model_card(run_dir: Path | str, step: int, kind: str, *, datasets: list[str] = (),
               tags: list[str] = (), at_step: dict | None = None, report: str | None = None,
               notes: str = "") -> ModelCard:
    """The card of an export of the checkpoint at `step` (kind: full, merged, adapter or
    interpolated). `at_step` replaces that checkpoint's evaluation (an interpolated model's
    scores); `report` (the run's evaluation report, Markdown) goes in with its headings one level
    down; `notes` (Markdown) ends the card. ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"export kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    stages = run_chain(run_dir, step)
    base, base_note = original_model(str(stages[0].config.get("model", {}).get("name_or_path", "")))
    stories = [stage_story(stage, at_step if i == len(stages) - 1 else None)
               for i, stage in enumerate(stages)]
    shifted = "\n".join("#" + line if line.startswith("#") else line
                        for line in (report or "").rstrip().splitlines())
    return ModelCard.from_template(
        card_data(stages, kind, datasets, tags), template_str=TEMPLATE,
        title=f"{stages[-1].config.get('name', 'run')}, step {step}", base=base,
        base_note=base_note, holds=KINDS[kind], stories=stories,
        adapter_base=_adapter_base(stages, base) if kind == "adapter" else None,
        report=shifted, notes=notes.strip(), config=json.dumps(stages[-1].config, indent=2))


def _adapter_base(stages: list[Stage], base: str) -> str:
    """Which model an adapter export goes on: the run's base, or its start_model (a parent's
    LoRA merged into its base) for an SFT run from a LoRA checkpoint."""
    spec = str(stages[-1].config.get("model", {}).get("name_or_path", ""))
    if len(stages) > 1 and stages[-2].is_lora:
        parent = stages[-2]
        return (f"this run's start model (`{spec}`): `{base}` with the LoRA adapter of "
                f"{parent.config.get('name')} (step {parent.step}) merged in. Load the adapter on "
                "that model, or export the checkpoint merged to get one model folder")
    if len(stages) > 1:
        return f"the checkpoint the run started from (`{spec}`): step {stages[-2].step} of {stages[-2].config.get('name')}"
    return f"`{base}`"


# -- one stage's story -----------------------------------------------------------------------

def stage_story(stage: Stage, at_step: dict | None = None) -> dict[str, Any]:
    """What the card says about one stage: name, kind, step, corpus, settings, perplexities,
    domain gain and forgetting, benchmark and probe tables, guard decisions."""
    evals = [e for e in stage.events if e.get("type") == "eval"]
    baseline = next((e for e in evals if e.get("baseline")), None)
    at = at_step if at_step is not None else next(
        (e for e in reversed(evals) if e.get("step") == stage.step), None)
    return {"name": stage.config.get("name", "run"), "stage": "SFT" if stage.is_sft else "CPT",
            "folder": str(stage.run_dir), "step": stage.step, "corpus": corpus_lines(stage.events),
            "settings": settings_lines(stage.config, _total_steps(stage.events)), "perplexity": perplexity_rows(baseline, at, SFT_SETS if stage.is_sft else None),
            "domain_gain": _percent((at or {}).get("domain_gain")),
            "forgetting": _percent((at or {}).get("forgetting")),
            "tasks": task_rows(stage.events, stage.step), "guard": guard_lines(stage.events)}


def corpus_lines(events: list[dict]) -> list[str]:
    """Each corpus's size as the run tokenized it ("domain: 120 documents, 22,909 tokens"), and
    an SFT run's instruction data as it reported it."""
    sizes = {e["corpus"]: e for e in events if e.get("type") == "status" and "documents" in e
             and e.get("corpus") and e.get("tokens") is not None}
    lines = [f"{name}: {e['documents']:,} documents, {e['tokens']:,} tokens" for name, e in sizes.items()]
    return lines + [e["message"] for e in events if e.get("type") == "status"
                    and str(e.get("message", "")).startswith("instruction data:")]


def _total_steps(events: list[dict]) -> int | None:
    """The optimizer steps the run planned (its last status event that says), or None."""
    return next((e["total_steps"] for e in reversed(events) if e.get("type") == "status"
                 and e.get("total_steps")), None)


def settings_lines(config: dict, total_steps: int | None = None) -> list[tuple[str, Any]]:
    """(label, value) of the settings a reader asks about first; `total_steps`: the run's
    optimizer steps, for a run without a step limit (an SFT run trains for epochs)."""
    method, schedule = config.get("method", {}), config.get("schedule", {})
    batch, corpus, ewc = config.get("batch", {}), config.get("corpus", {}), config.get("ewc", {})
    kind = method.get("kind", "full")
    if kind == "lora":
        kind = f"LoRA r={method.get('lora_rank')} alpha={method.get('lora_alpha')}"
    lines = [("model", config.get("model", {}).get("name_or_path")), ("method", kind),
             ("peak learning rate", schedule.get("peak_lr")), ("decay", schedule.get("decay")),
             ("steps", schedule.get("max_steps") or total_steps), ("replay ratio", corpus.get("replay_ratio")),
             ("batch", f"{batch.get('micro_batch')} x {batch.get('grad_accum')} sequences of "
                       f"{batch.get('seq_len')} tokens"),
             ("tokenizer extended", bool(config.get("tokenizer", {}).get("extend"))),
             ("EWC", f"on, strength {ewc.get('strength')}" if ewc.get("enabled") else False)]
    if config.get("stage") == "sft":
        sft = config.get("sft", {})
        lines += [("instruction data", ", ".join(Path(p).name for p in sft.get("data", []))),
                  ("chat template", sft.get("template")), ("epochs", schedule.get("epochs"))]
    return lines


def perplexity_rows(baseline: dict | None, at: dict | None, labels: dict[str, str] | None = None
                    ) -> list[dict[str, str]]:
    """One row per evaluation set (named by `labels` where it has the set): perplexity and bits
    per byte at step 0 and at the checkpoint."""
    if at is None:
        return []
    names = [k.removesuffix("_ppl") for k in at if k.endswith("_ppl") and not k.endswith("_word_ppl")
             and at[k] is not None]
    return [{"set": (labels or {}).get(name, name), "base_ppl": _number(baseline, f"{name}_ppl"), "ppl": _number(at, f"{name}_ppl"),
             "base_bpb": _number(baseline, f"{name}_bpb"), "bpb": _number(at, f"{name}_bpb")}
            for name in names]


def task_rows(events: list[dict], step: int) -> list[dict[str, str]]:
    """The headline metric of every benchmark and probe task scored at the checkpoint: base
    (step 0), checkpoint, change."""
    scores = [e for e in events if e.get("type") in ("benchmark", "probe") and e.get("metric")]
    rows = []
    for table in task_tables(scores):
        if not table["primary"] or step not in table["scores"]:
            continue
        base, delta = table["scores"].get(0), table["deltas"].get(step)
        rows.append({"task": table["task"], "kind": table["kind"], "metric": table["metric"],
                     "base": f"{base['value']:.3f}" if base else "-",
                     "value": f"{table['scores'][step]['value']:.3f}",
                     "change": f"{delta['delta']:+.3f}" if delta else "-"})
    return rows


def guard_lines(events: list[dict]) -> list[str]:
    """The forgetting guard's decisions, each at its step."""
    return [f"step {e.get('step')}: {e.get('message') or e.get('reason')}"
            for e in events if e.get("type") == "guard"]


def _number(event: dict | None, name: str) -> str:
    value = event and event.get(name)
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _percent(value: float | None) -> str:
    return f"{value:+.2%}" if isinstance(value, (int, float)) else "-"


TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Continual pre-training{% if stories | length > 1 %} and instruction tuning{% endif %} of `{{ base }}` \
with CPT Studio. This folder holds {{ holds }}, with the tokenizer (and its chat template, when it \
has one) the model was trained with.
{% if base_note %}
Base model: {{ base_note }}
{% endif %}{% if adapter_base %}
The adapter's base model is {{ adapter_base }}.
{% endif %}
## How it was made

{% for s in stories %}{{ loop.index }}. {{ s.stage }}: {{ s.name }}, checkpoint at step {{ s.step }}
{% endfor %}
{% for s in stories %}
## Stage {{ loop.index }}: {{ s.stage }}, {{ s.name }} (step {{ s.step }})

{% if s.corpus %}### Data

{% for line in s.corpus %}- {{ line }}
{% endfor %}
{% endif %}### Settings

{% for label, value in s.settings %}- {{ label }}: {{ value }}
{% endfor %}
### Perplexity

{% if s.perplexity %}Step 0 is the model this stage started from.

| evaluation set | perplexity, step 0 | perplexity, step {{ s.step }} | bits per byte, step 0 | bits per byte, step {{ s.step }} |
|---|---|---|---|---|
{% for r in s.perplexity %}| {{ r.set }} | {{ r.base_ppl }} | {{ r.ppl }} | {{ r.base_bpb }} | {{ r.bpb }} |
{% endfor %}
- domain gain: {{ s.domain_gain }}
- forgetting: {{ s.forgetting }}
{% else %}No evaluation at this step.
{% endif %}{% if s.tasks %}
### Benchmarks and knowledge probes

| task | kind | metric | step 0 | step {{ s.step }} | change |
|---|---|---|---|---|---|
{% for r in s.tasks %}| {{ r.task }} | {{ r.kind }} | {{ r.metric }} | {{ r.base }} | {{ r.value }} | {{ r.change }} |
{% endfor %}{% endif %}
### Forgetting guard

{% if s.guard %}{% for line in s.guard %}- {{ line }}
{% endfor %}{% else %}No intervention.
{% endif %}{% endfor %}{% if report %}
{{ report }}
{% endif %}{% if notes %}
{{ notes }}
{% endif %}
## Full run configuration (the last stage)

```json
{{ config }}
```
"""
"""The card's Markdown (Jinja, rendered by huggingface_hub.ModelCard.from_template)."""
