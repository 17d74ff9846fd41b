"""lm-evaluation-harness tasks on a loaded model: task lookup, availability, running, caching.

    manager = task_manager(["RUN/eval/tasks"], registry=True)     # local folders (+ the registry)
    runnable, unavailable = check_tasks(["probes_mc", "arc_easy"], manager)
    # unavailable == {"arc_easy": "its data is not in the local datasets cache and ..."}
    lm = wrap_model(model, tokenizer)                         # batch size: "auto"
    scores = run_task(lm, "probes_mc", manager, num_fewshot=0, limit=None)  # list[Score]

Everything is computed by lm-eval (`simple_evaluate` with an `HFLM` around the loaded model):
this module only chooses tasks, catches what lm-eval and `datasets` raise, and turns results
into Score rows. Scores are fractions (acc 0.41 = 41%); "points" in the rest of the project
are hundredths of that scale (a drop of 3 points is 0.03).

Availability: a task is runnable when lm-eval can build it here and now, which for a registry
task means its dataset is in the local HF datasets cache or the Hub is reachable. Each task is
built once before anything is evaluated (`check_tasks`); one that cannot be is listed with the
reason, never a traceback. A Hub that cannot be reached is detected first (a 3 s connection
attempt), and the process then goes offline, so a missing dataset fails at once instead of
after minutes of retries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import socket
import unittest.mock
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .hf_imports import imported_name
from .paths import data_dir, resource_path
from .tokenstore import tokenizer_fingerprint

log = logging.getLogger(__name__)

BOOTSTRAP_ITERS = 1000
"""Bootstrap draws for the stderr of metrics that have no closed form (perplexity); lm-eval's
own default is 100,000 (seconds per task on 2 cores). CPT_STUDIO_BOOTSTRAP_ITERS overrides it
(bench/evaluate.py sets lm-eval's default, to compare like with like)."""
PRIMARY_METRICS = ("acc", "acc_norm", "exact_match", "mc1", "f1", "bleu")
"""The metric a task is judged by (the first one it reports), e.g. for the 3-point rule."""
KINDS = ("domain", "general", "probe")


@dataclass(frozen=True)
class Score:
    """One metric of one task for one model (a benchmark event and a store row)."""

    task: str
    metric: str
    value: float
    """The metric as lm-eval reports it (accuracies are fractions from 0 to 1)."""
    stderr: float | None
    """lm-eval's standard error of the value (None when it gives none)."""
    num_fewshot: int
    limit: int | None
    """At most this many examples were scored (None: all)."""
    samples: int | None
    """Examples actually scored."""
    task_version: Any
    harness_version: str
    higher_is_better: bool = True
    primary: bool = False
    """The task's headline metric (PRIMARY_METRICS order)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def harness_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


# -- tasks -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _manager(include_paths: tuple[str, ...], registry: bool, stamp: tuple):
    TaskManager = imported_name("lm_eval.tasks", "TaskManager")  # noqa: N806 (a class)
    return TaskManager(include_path=list(include_paths) or None, include_defaults=registry)


def task_manager(include_paths: list[Path | str] = (), *, registry: bool = True):
    """lm-eval's TaskManager over these local task folders, plus the registry when `registry`
    (indexing the registry takes about 15 s on 2 cores; the manager is kept per process, and
    made again when a task file in the folders changes)."""
    folders = tuple(str(Path(p).resolve()) for p in include_paths)
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for folder in folders
                  for f in sorted(Path(folder).rglob("*.yaml")))
    return _manager(folders, registry, stamp)


def search_tasks(query: str, manager=None, most: int = 200) -> list[str]:
    """Registry (and local) task, group and tag names containing `query` (any case)."""
    manager = manager or task_manager()
    query = query.lower().strip()
    return [name for name in sorted(manager.all_tasks) if query in name.lower()][:most]


def load_presets(path: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """Task presets by domain: {"medical": {"domain": [...], "general": [...]}, ...}.

    The user's copy (data folder/eval-presets.json) wins over the bundled one, so presets
    can be edited without touching the installation."""
    user = data_dir() / "eval-presets.json"
    path = Path(path) if path else (user if user.is_file() else resource_path("eval", "presets.json"))
    try:
        presets = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the task presets ({exc}); fix the file or delete "
                         "it to use the bundled presets") from exc
    return {name: {kind: list(value.get(kind, [])) for kind in ("domain", "general")}
            for name, value in presets.items() if not name.startswith("_")}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF Hub can be reached now (False when offline mode is set)."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in
           ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline_unless_reachable() -> bool:
    """Set offline mode for this process when the Hub cannot be reached; returns reachability.
    Best called before lm-eval or datasets is imported (they read the setting once; the
    flags of modules already imported are set too)."""
    reachable = hub_reachable()
    if not reachable:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        import sys

        for module, name in (("huggingface_hub.constants", "HF_HUB_OFFLINE"),
                             ("datasets.config", "HF_HUB_OFFLINE")):
            if module in sys.modules:  # already imported (a training worker): set it there too
                setattr(sys.modules[module], name, True)
    return reachable


def check_tasks(names: list[str], manager) -> tuple[list[str], dict[str, str]]:
    """(runnable names, {unavailable name: reason}); each task is built once here, which is
    where a missing dataset shows."""
    runnable, unavailable = [], {}
    for name in dict.fromkeys(names):
        reason = _unavailable_reason(name, manager)
        if reason:
            unavailable[name] = reason
            log.warning("task %s is unavailable: %s", name, reason)
        else:
            runnable.append(name)
    return runnable, unavailable


def task_availability(names: list[str], task_folders: list[Path | str] = ()
                      ) -> tuple[list[str], dict[str, str]]:
    """check_tasks for names as an evaluation would find them (the task folders, and the
    registry only when a name is not in them: its index takes ~15 s to build), offline at once
    when the Hub cannot be reached. For the GUI's task picker, off its thread."""
    go_offline_unless_reachable()
    manager = task_manager(task_folders, registry=False)
    if any(name not in manager.all_tasks for name in names):
        manager = task_manager(task_folders, registry=True)
    return check_tasks(list(names), manager)


def _unavailable_reason(name: str, manager) -> str | None:
    if name not in manager.all_tasks:
        return ("not a task of lm-eval's registry or of the task folders; search the registry "
                "with `cpt-studio tasks WORD`")
    get_task_dict = imported_name("lm_eval.tasks", "get_task_dict")

    try:
        get_task_dict([name], manager)
    except ConnectionError as exc:
        return (f"its data is not in the local datasets cache and the Hub cannot be reached "
                f"({_one_line(exc)}); run once with a network connection to cache it")
    except Exception as exc:  # noqa: BLE001 — lm-eval and datasets raise many kinds
        return f"lm-eval cannot build it: {type(exc).__name__}: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException, most: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= most else text[:most] + "…"


def task_version(name: str, manager) -> Any:
    """The task's version as its YAML states it (probe tasks: a hash of their data)."""
    entry = manager.task_index.get(name)
    cfg = (entry.cfg if entry is not None else None) or {}
    return (cfg.get("metadata") or {}).get("version")


# -- running ---------------------------------------------------------------------------------

FIXED_BATCH_SIZE = 4
"""The batch size "auto" gives where lm-eval's search cannot run: on a CPU (memory is not caught
as out-of-memory there, so the search would keep its first try of 64 long requests) and for a
model still training (its attempts would run out of memory beside the optimizer's state)."""


def wrap_model(model, tokenizer, batch_size: int | str = "auto", *, merge: bool = True):
    """lm-eval's HFLM around an already loaded model, put in eval mode. A LoRA model is merged
    first when `merge` (HFLM expects a plain transformers model, and merged weights score the
    same, faster); a model still training is wrapped as it is (merge=False). `batch_size`:
    requests per forward pass, or "auto" (`lm_batch_size`)."""
    HFLM = imported_name("lm_eval.models.huggingface", "HFLM")  # noqa: N806 (a class)

    if merge and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    return HFLM(pretrained=model, tokenizer=tokenizer,
                batch_size=lm_batch_size(batch_size, model, training=not merge))


def lm_batch_size(batch_size: int | str, model, *, training: bool = False) -> int | str:
    """The batch size handed to lm-eval: a number as it is; "auto" stays lm-eval's "auto" (the
    largest batch that fits, searched from 64 down on the longest request) for a model on a GPU
    that is not training, else FIXED_BATCH_SIZE."""
    if batch_size != "auto":
        return int(batch_size)
    on_gpu = next(model.parameters()).device.type == "cuda"
    return "auto" if on_gpu and not training else FIXED_BATCH_SIZE


def run_task(lm, name: str, manager, *, num_fewshot: int = 0, limit: int | None = None) -> list[Score]:
    """Every metric of one task (a group: its aggregate) for the wrapped model."""
    results = _harness(lm, name, manager, num_fewshot, limit)
    return scores_from_results(results, name, num_fewshot, limit)


def _harness(lm, name: str, manager, num_fewshot: int, limit: int | None) -> dict:
    """The one call into lm-eval's evaluator (tests count these calls)."""
    import lm_eval
    import lm_eval.evaluator

    # After scoring, simple_evaluate records the environment (torch's collect_env: pip and
    # nvidia-smi subprocesses, about 2 s a call on 2 cores) and the git commit of the working
    # folder (`git describe`, whose "fatal: not a git repository" reached the log pane).
    # Neither is read here and lm-eval has no switch for them: both are skipped for this call.
    with unittest.mock.patch.object(lm_eval.evaluator, "add_env_info", lambda results: None), \
            unittest.mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", lambda: None):
        return lm_eval.simple_evaluate(
            model=lm, tasks=[name], num_fewshot=num_fewshot, limit=limit, task_manager=manager,
            log_samples=False, verbosity="WARNING",
            bootstrap_iters=int(os.environ.get("CPT_STUDIO_BOOTSTRAP_ITERS", BOOTSTRAP_ITERS)))


def scores_from_results(results: dict, name: str, num_fewshot: int, limit: int | None) -> list[Score]:
    """Score rows from simple_evaluate's result for task `name`."""
    row = results["results"][name]
    better = results.get("higher_is_better", {}).get(name, {})
    samples = (results.get("n-samples", {}).get(name) or {}).get("effective")
    shots = results.get("n-shot", {}).get(name, num_fewshot)
    metrics = [key.split(",")[0] for key in row if "," in key and "_stderr," not in key]
    primary = next((m for m in PRIMARY_METRICS if m in metrics), metrics[0] if metrics else None)
    scores = []
    for key, value in row.items():
        metric, _, filter_name = key.partition(",")
        if not filter_name or "_stderr" in metric or not isinstance(value, (int, float)):
            continue
        stderr = row.get(f"{metric}_stderr,{filter_name}")
        scores.append(Score(name, metric, float(value), _number(stderr), int(shots or 0), limit,
                            samples, results.get("versions", {}).get(name),
                            harness_version(), bool(better.get(metric, True)), metric == primary))
    return scores


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# -- the base model's scores, computed once --------------------------------------------------

def model_fingerprint(folder: Path, tokenizer) -> str:
    """A hash of a model folder's config, its weight files (name, size, first and last MiB)
    and the tokenizer: the same model gives the same fingerprint without reading every byte."""
    digest = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    folder = Path(folder)
    for path in sorted(folder.iterdir()):
        if path.suffix in (".json", ".safetensors", ".bin", ".gguf") and path.is_file():
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
            with open(path, "rb") as f:
                digest.update(f.read(1 << 20))
                f.seek(max(0, path.stat().st_size - (1 << 20)))
                digest.update(f.read())
    return digest.hexdigest()


class BaseScoreCache:
    """Base-model scores by (model fingerprint, task, task version, few-shot, limit, lm-eval
    version), in the data folder's eval-cache/base-scores.json."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else data_dir() / "eval-cache" / "base-scores.json"

    @staticmethod
    def key(fingerprint: str, task: str, version: Any, num_fewshot: int, limit: int | None) -> str:
        parts = [fingerprint, task, str(version), num_fewshot, limit, harness_version()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, key: str) -> list[Score] | None:
        found = self._read().get(key)
        return [Score(**row) for row in found] if found else None

    def put(self, key: str, scores: list[Score]) -> None:
        entries = self._read()
        entries[key] = [s.to_dict() for s in scores]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
        tmp.replace(self.path)

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
