"""Text from the base model and a run's checkpoints, side by side, kept with the run.

    outputs = compare_generations(run_dir, "The patient received", [100, 200],
                                  GenerationSettings(max_new_tokens=40))
    # {"base": "...", "step 100": "...", "step 200": "..."}, also appended to
    # run_dir/generations.jsonl with the prompt, the settings and the time

A checkpoint is loaded as the run trained it: full weights, or a LoRA adapter on the run's
base model, with the tokenizer saved in the checkpoint (the extended one when the run
extends its tokenizer), so a new token is read and written as the run saw it.

An SFT run's models (its starting model, "base", and its checkpoints) are given the prompt as
a user's message rendered with the run's chat template and its generation prompt
(cpt_studio.core.sft_data.generation_prompt), so that each output is the model's answer; a CPT
run's models continue the prompt as plain text.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .hf_imports import imported_name
from .models import load_model_and_tokenizer, load_tokenizer_from_folder
from .run_folder import (
    CHECKPOINT_CONFIG,
    CONFIG,
    RunPaths,
    checkpoint_config,
    checkpoint_folder,
    read_json,
)

# torch, peft (seconds to import) and tokenizer_ext (which imports torch) are imported where a
# model is loaded or run, so that reading a run's generations or finding a checkpoint is cheap.

BASE = "base"


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    """Tokens generated after the prompt (fewer when the model writes its end-of-text token)."""
    greedy: bool = True
    """Always take the most likely token (deterministic); off: sample with temperature and top-p."""
    temperature: float = 0.8
    """Sampling only: below 1 sharpens the distribution, above 1 flattens it."""
    top_p: float = 0.95
    """Sampling only: draw from the smallest set of tokens whose probabilities sum to this."""
    seed: int = 0
    """Sampling only: the same seed gives the same text."""

    def validate(self) -> list[str]:
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max new tokens is {self.max_new_tokens}; generate at least 1")
        if not self.greedy and self.temperature <= 0:
            problems.append(f"temperature is {self.temperature}; give a positive temperature "
                            "or choose greedy decoding")
        if not self.greedy and not 0 < self.top_p <= 1:
            problems.append(f"top-p is {self.top_p}; give a value in (0, 1]")
        return problems


def checkpoint_name(step: int) -> str:
    return f"step {step}"


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def load_for_generation(source: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) for a model spec, a full checkpoint, or a LoRA checkpoint."""
    folder = Path(source)
    if not is_adapter(folder):
        return load_model_and_tokenizer(source, trust_remote_code=_trust(folder))
    base_spec = _run_config(folder)["model"]["name_or_path"]
    model, _ = load_model_and_tokenizer(base_spec, trust_remote_code=_trust(folder),
                                        allow_pickle=_trust(folder, "allow_pickle"))
    tokenizer = load_tokenizer_from_folder(folder, _trust(folder))  # an adapter folder has no config.json
    return _with_adapter(model, tokenizer, folder), tokenizer


def _with_adapter(model, tokenizer, folder: Path):
    """The base, resized as training resized it when the run extended the tokenizer, with the
    adapter loaded on top."""
    PeftModel = imported_name("peft", "PeftModel")  # noqa: N806 (a class)

    from .tokenizer_ext import PAD_MULTIPLE

    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=PAD_MULTIPLE,
                                      mean_resizing=False)
        padding = range(len(tokenizer), model.get_input_embeddings().weight.shape[0])
        model.generation_config.suppress_tokens = list(padding) or None
    return PeftModel.from_pretrained(model, folder)


def _run_config(checkpoint: Path) -> dict:
    """The run's config as frozen with the checkpoint, else the run folder's."""
    for path in (checkpoint_config(checkpoint), RunPaths.of_checkpoint(checkpoint).config):
        if path.is_file():
            return read_json(path)
    raise FileNotFoundError(f"{checkpoint} holds an adapter but neither it nor its run folder "
                            f"has a run config naming the base model; copy the run's {CONFIG} "
                            f"into it as {CHECKPOINT_CONFIG}")


def _trust(folder: Path, setting: str = "trust_remote_code") -> bool:
    """A model setting of the run that made the checkpoint (trust_remote_code, allow_pickle)."""
    try:
        return bool(_run_config(folder)["model"].get(setting))
    except (FileNotFoundError, KeyError, TypeError):
        return False


def generate(source: str | Path, prompts: list[str], *, max_new_tokens: int = 64,
             greedy: bool = True, temperature: float = 0.8, top_p: float = 0.95,
             seed: int = 0, chat_template: str | None = None) -> list[str]:
    """The continuation of each prompt (without the prompt) by a model spec or checkpoint; with
    `chat_template` (Jinja), the answer to each prompt given as the user's message."""
    settings = GenerationSettings(max_new_tokens, greedy, temperature, top_p, seed)
    model, tokenizer = load_for_generation(source)
    return _generate(model, tokenizer, prompts, settings, chat_template)


def chat_template_of(run_dir: Path | str) -> str | None:
    """The chat template an SFT run trains with (saved in its folder), None for a CPT run."""
    path = RunPaths(Path(run_dir)).chat_template
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _encode(tokenizer, prompt: str, chat_template: str | None):
    if chat_template is None:
        return tokenizer(prompt, return_tensors="pt")
    from .sft_data import generation_prompt

    text = generation_prompt(tokenizer, [{"role": "user", "content": prompt}], chat_template)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)  # the template has any BOS


def _generate(model, tokenizer, prompts: list[str], settings: GenerationSettings,
              chat_template: str | None = None) -> list[str]:
    import torch

    problems = settings.validate()
    if problems:
        raise ValueError("; ".join(problems))
    model.eval()
    sampling = {} if settings.greedy else {"temperature": settings.temperature,
                                           "top_p": settings.top_p, "top_k": 0}
    texts = []
    for prompt in prompts:  # one at a time: no padding side to get wrong
        ids = _encode(tokenizer, prompt, chat_template).to(model.device)
        torch.manual_seed(settings.seed)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=settings.max_new_tokens,
                                 do_sample=not settings.greedy,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def compare_generations(run_dir: Path | str, prompt: str, checkpoints: list[int],
                        settings: GenerationSettings | None = None, *,
                        include_base: bool = True) -> dict[str, str]:
    """The prompt's continuation by the base model and each checkpoint ("base", "step N"), or
    for an SFT run their answer to it (see the module docstring), appended to the run's
    generations.jsonl."""
    settings = settings or GenerationSettings()
    run_dir = Path(run_dir)
    config = read_json(RunPaths(run_dir).config)
    sources = {BASE: config["model"]["name_or_path"]} if include_base else {}
    sources.update({checkpoint_name(step): checkpoint_folder(run_dir, step) for step in checkpoints})
    template = chat_template_of(run_dir)
    outputs = {name: generate(source, [prompt], **asdict(settings), chat_template=template)[0]
               for name, source in sources.items()}
    _keep(run_dir, {"time": time.time(), "prompt": prompt, "settings": asdict(settings),
                    "checkpoints": list(checkpoints), "outputs": outputs, "chat": template is not None})
    return outputs


def _keep(run_dir: Path, record: dict) -> None:
    with open(RunPaths(run_dir).generations, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_generations(run_dir: Path | str) -> list[dict]:
    """The generations kept with a run, oldest first."""
    path = RunPaths(Path(run_dir)).generations
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
