"""Why a run failed, in one sentence that says what to change: the failure record.

    failure = classify(exc, config)            # in the worker, from the exception it caught
    failure.sentence                           # "Out of memory: lower the micro-batch (now 8) ..."
    failure.resumable                          # False for a configuration error
    failure = failure_of(status, log)          # in a reader (GUI, CLI), from the status event

The worker writes the sentence as the failed status event's `message`, with `failure` (the kind)
and `resumable` beside the traceback (cpt_studio.core.worker.record_failure); the monitor, the
history and `cpt-studio show` print that message. A failed status event written before these
fields existed, or a worker that died without one, is classified again from the traceback's (or
the log's) last exception line, so every reader shows the same sentence for the same failure.

Kinds, in the order they are tried:
  out of memory       torch's OutOfMemoryError, MemoryError, "out of memory" in the message:
                      lower the micro-batch or the sequence length (resumable);
  missing file        a corpus or other file that is not there: put it back (resumable);
  corrupt checkpoint  a checkpoint that cannot be read: delete it, resume from the one before;
  configuration       the config or the pre-flight refused a setting, or peft found no target
                      module: the setting, which resuming cannot change (not resumable);
  unknown             the exception's last line (resumable).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OUT_OF_MEMORY = "out of memory"
MISSING_FILE = "missing file"
CORRUPT_CHECKPOINT = "corrupt checkpoint"
CONFIGURATION = "configuration"
UNKNOWN = "unknown"
KINDS = (OUT_OF_MEMORY, MISSING_FILE, CORRUPT_CHECKPOINT, CONFIGURATION, UNKNOWN)

NOT_RESUMABLE_TIP = ("Resuming runs the same settings again, and a setting is the problem: "
                     "start a new run from this run with the setting changed.")
"""Why Resume is off for a configuration error (the monitor's tooltip)."""

_OOM_TYPES = {"OutOfMemoryError", "MemoryError"}
_OOM_TEXT = re.compile(r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|Cannot allocate memory", re.I)
_CONFIG_TYPES = {"ConfigError", "ModelError", "SeparatorError", "PreflightError"}
_CONFIG_TEXT = re.compile(r"^the run cannot start|^\d+ problem\(s\) in the config|"
                          r"Target modules? .* not found in the base model", re.I | re.S | re.M)
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt|Exit)\b(:|$)")
_TARGETS = re.compile(r"Target modules? (.*?) not found in the base model", re.S)
_MISSING = re.compile(r"(\S+): does not exist")
_CHECKPOINT = re.compile(r"(checkpoints?/)?(checkpoint-\d+)")
_CORRUPT_TEXT = re.compile(r"deserializ|HeaderTooLarge|incomplete metadata|PytorchStreamReader|"
                           r"invalid load key|unexpected EOF|Expecting value|file is truncated|"
                           r"not a zip file|damaged", re.I)


@dataclass(frozen=True)
class Failure:
    kind: str
    """One of KINDS."""
    sentence: str
    """What went wrong and what to change, in one sentence."""
    resumable: bool
    """False when resuming cannot help (the run's own settings are the problem)."""


def classify(exc: BaseException, config: Mapping[str, Any] | None = None) -> Failure:
    """The failure an exception means. `config`: the run's config as a dict (its config.json),
    for the settings a sentence names (micro-batch, sequence length); optional."""
    chain = _chain(exc)
    types = {type(e).__name__ for e in chain} | {c.__name__ for e in chain for c in type(e).__mro__}
    text = "\n".join(str(e) for e in chain)
    return _classify(types, text, _last_line(exc), config)


def failure_of(status: Mapping[str, Any], log: str = "",
               config: Mapping[str, Any] | None = None) -> Failure:
    """The failure a failed status event records: its own sentence when the worker classified
    it (`failure` and `resumable` are set), else classified again from the last exception line
    of its traceback or of `log` (the worker's log, for a worker that died without saying why),
    else its message as it stands."""
    if status.get("failure") in KINDS and status.get("message"):
        return Failure(status["failure"], status["message"], status.get("resumable") is not False)
    traceback = last_exception(status.get("traceback") or "")
    last = traceback or last_exception(log)
    if last:
        name, _, message = last.partition(":")
        failure = _classify({name.strip().rsplit(".", 1)[-1]}, message.strip(),
                            last.splitlines()[0], config)
        if not traceback and failure.kind != UNKNOWN:  # a worker that died without saying why
            return Failure(failure.kind, f"The worker ended without a final status; its log's last "
                           f"error is {last.splitlines()[0]}. {failure.sentence}", failure.resumable)
        if failure.kind != UNKNOWN or not status.get("message"):
            return failure
    return Failure(UNKNOWN, status.get("message") or "the run failed; see Details", True)


def last_exception(text: str) -> str:
    """The last exception of a traceback or a log: its "SomeError: message" line and the
    indented lines after it (the problems a ConfigError lists); "" when there is none."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if not starts:
        return ""
    block = [lines[starts[-1]]]
    for line in lines[starts[-1] + 1:]:
        if not line.startswith((" ", "\t")) or not line.strip():
            break
        block.append(line)
    return "\n".join(block).strip()


def _classify(types: set[str], text: str, last: str, config: Mapping[str, Any] | None) -> Failure:
    if types & _OOM_TYPES or _OOM_TEXT.search(text):
        return Failure(OUT_OF_MEMORY, _out_of_memory(config), True)
    missing = _missing_file(types, text)
    if missing:
        return Failure(MISSING_FILE, f"The file {missing} is missing: put it back at that path "
                       "(or start a new run from this run that points to where it is now), then Resume.",
                       True)
    checkpoint = _CHECKPOINT.search(text)
    if checkpoint and _CORRUPT_TEXT.search(text):
        name = checkpoint.group(2)
        return Failure(CORRUPT_CHECKPOINT, f"The checkpoint {name} cannot be read (damaged or "
                       f"incomplete): delete checkpoints/{name}, then Resume from the one before it.", True)
    if types & _CONFIG_TYPES or _CONFIG_TEXT.search(text):
        return Failure(CONFIGURATION, _configuration(text), False)
    return Failure(UNKNOWN, f"{last or 'the run failed'} (see Details for the traceback).", True)


def _out_of_memory(config: Mapping[str, Any] | None) -> str:
    batch = (config or {}).get("batch") or {}
    now = lambda key: f" (now {batch[key]})" if key in batch else ""  # noqa: E731
    return (f"Out of memory: lower the micro-batch{now('micro_batch')} or the sequence length"
            f"{now('seq_len')}, or turn gradient checkpointing on; raise gradient accumulation to "
            "keep the tokens per step.")


def _missing_file(types: set[str], text: str) -> str | None:
    if "FileNotFoundError" in types:
        found = re.search(r"No such file or directory: '([^']+)'", text)
        if found:
            return found.group(1)
    found = _MISSING.findall(text)
    lines = [line.strip() for line in text.splitlines() if "does not exist" in line]
    if found and all("check the path" in line or "corpus" in line for line in lines):
        return found[-1]
    return None


def _configuration(text: str) -> str:
    """The first problem a configuration error lists, with its setting's fix."""
    targets = _TARGETS.search(text)
    if targets:
        return (f"A setting stops this run: method.target_modules: {targets.group(1)} not found in "
                "the model. Choose modules the model has in a new run from this run; resuming "
                "runs the same settings.")
    problems = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    first = problems[0] if problems else text.strip().splitlines()[0]
    more = f" (and {len(problems) - 1} more: see Details)" if len(problems) > 1 else ""
    return (f"A setting stops this run: {first.rstrip('.')}{more}. Change it in a new run from this "
            "run; resuming runs the same settings.")


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _last_line(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[-1]}" if message else type(exc).__name__
