"""Knowledge probes: facts the model should learn, written as JSONL, run as lm-eval tasks.

    probes = read_probes(Path("probes.jsonl"))        # CorpusError listing file:line problems
    names = write_probe_tasks(probes, RunPaths(run_dir).eval_tasks, "probes")
    # ["probes_cloze", "probes_mc"]: lm-eval task YAML + data, found with TaskManager(include_path=...)

One probe per line, either kind in the same file:
  cloze:            {"prompt": "Tacrolimus binds the immunophilin", "answer": "FKBP12"}
  multiple choice:  {"question": "Tacrolimus is metabolised mainly by", "choices": ["CYP3A4",
                     "CYP2D6", "CYP1A2"], "answer": 0}

How each kind is scored (by lm-eval, from the model's log-likelihoods):
  * cloze probes become a `loglikelihood` task (the way lm-eval scores LAMBADA): `acc` is the
    fraction of probes whose answer is exactly the model's greedy continuation of the prompt,
    token by token (the fact is recalled, not merely recognised), and `perplexity` is exp of
    minus the mean log-likelihood of the answers (graded: it falls as a fact is learned before
    the greedy continuation flips to it). A multiple choice over the single answer would score
    1 whatever the model knows, so it is not used.
  * multiple-choice probes become a `multiple_choice` task: `acc` is the fraction where the
    right choice has the highest log-likelihood, `acc_norm` the same per byte of the choice.
    Chance level is 1 / number of choices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .corpus import CorpusError, Problem, jsonl_objects

CLOZE, MULTIPLE_CHOICE = "cloze", "mc"
CLOZE_FIELDS, MC_FIELDS = ("prompt", "answer"), ("question", "choices", "answer")  # in this order in the data file


@dataclass(frozen=True)
class Probe:
    kind: str
    """'cloze' or 'mc'."""
    record: dict
    """The probe as the task's data file holds it (prompt/answer or question/choices/answer)."""
    origin: str
    """file:line where the probe was written."""


def read_probes(path: Path | str) -> list[Probe]:
    """Every probe of a JSONL file; CorpusError with every bad line (file:line: what to fix)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError([Problem(str(path), None, "does not exist; give a probe file (JSONL)")],
                          skipped_hint=False, what="the probe file")
    probes, problems = [], []
    for item in jsonl_objects(path, 'a probe: {"prompt", "answer"} or {"question", "choices", "answer"}'):
        item = item if isinstance(item, Problem) else _probe(*item, str(path))
        (problems if isinstance(item, Problem) else probes).append(item)
    if not probes and not problems:
        problems.append(Problem(str(path), None, "holds no probes; add one JSON object per line"))
    if problems:
        raise CorpusError(problems, skipped_hint=False, what="the probe file")
    return probes


def _probe(record: dict, number: int, file: str) -> Probe | Problem:
    if "prompt" in record:
        problem = _cloze_problem(record)
        kind, fields = CLOZE, CLOZE_FIELDS
    elif "question" in record:
        problem = _mc_problem(record)
        kind, fields = MULTIPLE_CHOICE, MC_FIELDS
    else:
        return Problem(file, number, f"neither a cloze probe (prompt, answer) nor a multiple-choice "
                                     f"one (question, choices, answer); fields: {', '.join(sorted(record)) or 'none'}")
    if problem:
        return Problem(file, number, problem)
    return Probe(kind, {k: record[k] for k in fields}, f"{file}:{number}")


def _cloze_problem(record: dict) -> str | None:
    prompt, answer = record.get("prompt"), record.get("answer")
    if not isinstance(prompt, str) or not prompt.strip():
        return "'prompt' must be non-empty text"
    if not isinstance(answer, str) or not answer.strip():
        return "'answer' must be non-empty text: the words that should follow the prompt"
    if answer != answer.strip():
        return "'answer' must not start or end with spaces (a space is put between prompt and answer)"
    return None


def _mc_problem(record: dict) -> str | None:
    question, choices, answer = record.get("question"), record.get("choices"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        return "'question' must be non-empty text"
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        return "'choices' must be a list of at least 2 non-empty texts"
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        return f"'answer' must be the index of the right choice, 0 to {len(choices) - 1}"
    return None


def write_probe_tasks(probes: list[Probe], folder: Path, prefix: str = "probes") -> list[str]:
    """Write one lm-eval task per kind present (`<prefix>_cloze`, `<prefix>_mc`): a data file
    and its YAML in `folder`; returns the task names. The task's version is a hash of its
    data and template, so cached base scores never outlive an edited probe file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for kind in (CLOZE, MULTIPLE_CHOICE):
        records = [p.record for p in probes if p.kind == kind]
        if records:
            name = f"{prefix}_{kind}"
            data = folder / f"{name}.jsonl"
            data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                            encoding="utf-8")
            # The version is what the base-score cache is keyed by: the probes and the template, not
            # where this run keeps them, so another run of the same base model finds the scores.
            content = data.read_bytes() + _yaml(name, kind, "", 0).encode()
            version = int(hashlib.sha256(content).hexdigest()[:8], 16)
            (folder / f"{name}.yaml").write_text(_yaml(name, kind, str(data.resolve()), version), encoding="utf-8")
            names.append(name)
    return names


def _yaml(name: str, kind: str, data: str, version: int) -> str:
    """lm-eval task YAML (JSON is valid YAML, and quotes every path and template safely)."""
    # A loglikelihood task scores the target exactly as rendered: the space between prompt and
    # answer goes into the target (as lm-eval's LAMBADA does), not into target_delimiter.
    task = {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": data}},
            "test_split": "test", "metadata": {"version": version}}
    if kind == CLOZE:
        task.update(output_type="loglikelihood", doc_to_text="{{prompt}}",
                    doc_to_target="{{' ' + answer}}", target_delimiter="",
                    metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                 {"metric": "perplexity", "aggregation": "perplexity",
                                  "higher_is_better": False}])
    else:
        task.update(output_type="multiple_choice", doc_to_text="{{question}}",
                    doc_to_choice="{{choices}}", doc_to_target="answer",
                    metric_list=[{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                 for m in ("acc", "acc_norm")])
    return json.dumps(task, indent=1, ensure_ascii=False) + "\n"
