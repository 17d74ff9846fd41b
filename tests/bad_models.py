"""Model folders of every kind a user may bring, made from the tiny model: what the
bad-input battery (CLI) and the GUI's model page are tested with."""

import json
import shutil

import torch

from cpt_studio.core.testing.tiny_model import build_tiny_model


def make_bad_models(root) -> dict:
    """{kind: folder}: good, no-weights, truncated, bert, remote-code, pickle, no-eos, instruct."""
    good = build_tiny_model(root / "good")
    made = {"good": good}

    def variant(name, change):
        folder = root / name
        shutil.copytree(good, folder)
        change(folder)
        made[name] = folder

    variant("no-weights", lambda f: (f / "model.safetensors").unlink())
    variant("truncated", lambda f: (f / "model.safetensors").write_bytes(
        (good / "model.safetensors").read_bytes()[:5000]))
    variant("bert", lambda f: _edit_config(f, architectures=["BertForMaskedLM"], model_type="bert"))
    variant("remote-code", lambda f: _edit_config(f, model_type="my_private_arch",
                                                  auto_map={"AutoModelForCausalLM": "modeling.MyModel"}))
    variant("pickle", _to_pickle)
    made["no-eos"] = build_tiny_model(root / "no-eos", special="no-eos")
    made["instruct"] = build_tiny_model(root / "instruct", special="instruct")
    return made


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def _to_pickle(folder):
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
