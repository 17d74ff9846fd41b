"""RunConfig: everything a run needs, one dataclass per pipeline section, JSON in and out.

    config = RunConfig.from_json(path.read_text())
    problems = config.validate()        # every problem at once, each with its fix
    path.write_text(config.to_json())

Each field carries its documentation in the docstring below it; the GUI and the CLI show
those words. validate() is the only place that decides whether a config can run.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import TXT_MODES, SourceSpec


@dataclass
class CorpusConfig:
    """The domain corpus, the general (replay) corpus, and how they are read and mixed."""

    domain: list[SourceSpec] = field(default_factory=list)
    """Domain sources: files or folders of .jsonl, .txt, .parquet (optionally .gz)."""
    general: list[SourceSpec] = field(default_factory=list)
    """General sources replayed during training to limit forgetting."""
    replay_ratio: float = 0.05
    """Fraction of every optimizer step's sequences drawn from the general corpus."""
    heldout_fraction: float = 0.02
    """Fraction of each corpus's documents held out for evaluation (never trained on)."""
    heldout_count: int | None = None
    """Held-out documents per corpus as a count; overrides heldout_fraction when set."""
    skip_bad: bool = False
    """Leave out bad records (and count them) instead of refusing to start."""

    def validate(self) -> list[str]:
        problems = []
        if not self.domain:
            problems.append("corpus: add at least one domain source (a file or folder)")
        if self.replay_ratio > 0 and not self.general:
            problems.append("corpus: replay is on but there is no general source; add one "
                            "or set the replay ratio to 0")
        if not 0 <= self.replay_ratio < 1:
            problems.append(f"corpus: replay ratio {self.replay_ratio} must be from 0 to below 1 (0.05 = 5%)")
        if not 0 < self.heldout_fraction < 0.5 and self.heldout_count is None:
            problems.append(f"corpus: held-out fraction {self.heldout_fraction} must be above 0 and "
                            "below 0.5 (0.02 = 2%)")
        if self.heldout_count is not None and self.heldout_count < 1:
            problems.append("corpus: held-out count must be at least 1 document")
        for spec in self.domain + self.general:
            if spec.txt_mode not in TXT_MODES:
                problems.append(f"corpus: {spec.path}: text mode must be 'file' or 'blocks'")
            if not spec.text_field:
                problems.append(f"corpus: {spec.path}: the text field is empty; name the field "
                                "that holds the documents")
            if not Path(spec.path).expanduser().exists():
                problems.append(f"corpus: {spec.path} does not exist; check the path")
        return problems


@dataclass
class RunConfig:
    """One run of continual pre-training."""

    name: str = "run"
    """A name for the run, shown in the runs list."""
    model: str = ""
    """Base model: an HF model folder, a hub id in the local cache, or a .gguf file."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    seed: int = 0
    """Seed for the held-out split, the data order and the initialisation of new weights."""

    def validate(self) -> list[str]:
        problems = [] if self.model else ["model: choose a base model (a folder, a cached hub id or a .gguf file)"]
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if hasattr(value, "validate"):
                problems += value.validate()
        return problems

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        return _build(cls, data, "config")

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))


def _build(cls, data, where: str):
    """Build dataclass `cls` from a dict, refusing unknown keys with their place named."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**{key: _value(hints[key], value, f"{where}.{key}") for key, value in data.items()})


def _value(hint, value, where: str):
    if dataclasses.is_dataclass(hint) and hint is not SourceSpec:
        return _build(hint, value, where)
    if typing.get_origin(hint) is list and typing.get_args(hint)[0] is SourceSpec:
        return [SourceSpec.from_json(v) for v in value]
    return value
