"""The run folder's one model: every file of a run is named here, and only here.

A run is a folder; it alone is enough to resume, re-plot, evaluate or compare the run (the
store indexes it and can be rebuilt from it). Its layout:

    <run>/
      config.json                  the frozen RunConfig                      RunPaths.config
      events.jsonl                 the run's timeline, one event a line      .events
      guard.json                   the guard's remedies in effect            .guard_state
      generations.jsonl            prompts and outputs kept by Generate      .generations
      stop                         a stop request to the training worker     .stop_request
      worker.pid                   the training worker's pid and start time  .pid
      worker.claim                 held while a launcher starts the worker   .claim
      logs/                                                                  .logs
        worker.log                 the training worker's output              .log
        eval.log                   the evaluation worker's output            .eval_log
      heldout/                                                               .heldout_dir
        domain.jsonl               held-out documents, never trained on      .heldout("domain")
        general.jsonl                                                        .heldout("general")
        sft.jsonl                  an SFT run's held-out examples            .heldout("sft")
        corpus.json                each corpus's fingerprint at the start    .corpus_record
      tokenizer/                   the extended tokenizer (HF files), when   .tokenizer
        extension.json             the run extends one, and its record       .tokenizer_record
      chat_template.jinja          an SFT run's chat template (also in the   .chat_template
                                   tokenizer files of every checkpoint)
      start_model/                 an SFT run from a LoRA checkpoint: that   .start_model
                                   adapter merged into its base (HF files)
      checkpoints/                                                           .checkpoints
        checkpoint-200/            a complete checkpoint (HF files)          .checkpoint(200)
          run_config.json          the config it was trained with            checkpoint_config()
        .staging/                  where a checkpoint is written before      .staging
          checkpoint-220/          it is renamed into checkpoints/           .staged_checkpoint(220)
      eval/                        the evaluation job (never the training's) .eval_dir
        request.json               what to evaluate                          .eval_request
        events.jsonl               its progress (scores go to the run's)     .eval_events
        stop                       a stop request to the evaluation worker   .eval_stop
        worker.pid                 the evaluation worker's pid               .eval_pid
        tasks/                     lm-eval task files written for the run    .eval_tasks
      interpolation/               weight interpolation (core/interpolate.py)
        checkpoint-200/
          curve.json               base -> checkpoint-200, per alpha         .interpolation(200)
      sweep.json                   a sweep's run: its group and setting      .sweep
                                   (cpt_studio.core.sweep)
      launch/                      written by `cpt-studio launch`: the run   .launch
                                   on several GPUs or nodes (core/launch.py)
        accelerate_config.yaml     accelerate's config (DDP, FSDP2, DeepSpeed) .accelerate_config
        deepspeed.json             DeepSpeed's own config (--strategy deepspeed) .deepspeed_config
        launch.sh                  one machine: accelerate launch            .launch_script
        torchrun.sh                several nodes: one torchrun line per node .torchrun_script
        slurm.sbatch               a Slurm batch template                    .slurm_script
        README.md                  how to copy and run the bundle            .launch_readme
      report/                      written by `cpt-studio report`            .report
        report.md                                                            .report_markdown
        report.json                                                          .report_data
        scores.png                                                           .report_chart

    paths = RunPaths(run_dir)
    paths.checkpoint(200)            # <run>/checkpoints/checkpoint-200
    list_checkpoints(run_dir)        # complete checkpoints, oldest first
    checkpoint_label(0)              # "base model"; checkpoint_label(200): "checkpoint-200"

Checkpoints are written in .staging/ and renamed into checkpoints/; the tokenizer folder,
guard.json, the pid files and an update of config.json are written beside their target under
a .tmp name and renamed: a reader never sees half of one.

A checkpoint folder holds the HF Trainer's files (model weights, optimizer.pt,
trainer_state.json...): those are HF's, named by HF and, where we must name them, by the
module that needs them (core/export.py leaves the training state out). Only run_config.json
in it is ours. The folder name checkpoint-N is also the one the Trainer gives the folder it
writes into .staging/.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .disk import folder_size

CONFIG = "config.json"
EVENTS = "events.jsonl"
GUARD_STATE = "guard.json"
GENERATIONS = "generations.jsonl"
STOP = "stop"
PID = "worker.pid"
CLAIM = "worker.claim"
LOGS = "logs"
WORKER_LOG = "worker.log"
EVAL_LOG = "eval.log"
HELDOUT = "heldout"
HELDOUT_SUFFIX = ".jsonl"
"""A held-out file is its corpus's name and this (so not a name of its own in RUN_FILES)."""
CORPUS_RECORD = "corpus.json"
TOKENIZER = "tokenizer"
TOKENIZER_RECORD = "extension.json"
CHAT_TEMPLATE = "chat_template.jinja"
START_MODEL = "start_model"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_CONFIG = "run_config.json"
STAGING = ".staging"
EVAL = "eval"
EVAL_REQUEST = "request.json"
EVAL_TASKS = "tasks"
INTERPOLATION = "interpolation"
INTERPOLATION_CURVE = "curve.json"
LAUNCH = "launch"
ACCELERATE_CONFIG = "accelerate_config.yaml"
DEEPSPEED_CONFIG = "deepspeed.json"
LAUNCH_SCRIPT = "launch.sh"
TORCHRUN_SCRIPT = "torchrun.sh"
SLURM_SCRIPT = "slurm.sbatch"
LAUNCH_README = "README.md"
REPORT = "report"
REPORT_MARKDOWN = "report.md"
REPORT_DATA = "report.json"
REPORT_CHART = "scores.png"
SWEEP = "sweep.json"

RUN_FILES = (CONFIG, EVENTS, GUARD_STATE, GENERATIONS, STOP, PID, CLAIM, LOGS, WORKER_LOG,
             EVAL_LOG, HELDOUT, CORPUS_RECORD, TOKENIZER, TOKENIZER_RECORD, CHAT_TEMPLATE,
             START_MODEL, CHECKPOINTS,
             CHECKPOINT_PREFIX, CHECKPOINT_CONFIG, STAGING, EVAL, EVAL_REQUEST, EVAL_TASKS, REPORT,
             INTERPOLATION, INTERPOLATION_CURVE, REPORT_MARKDOWN, REPORT_DATA, REPORT_CHART, SWEEP,
             LAUNCH, ACCELERATE_CONFIG, DEEPSPEED_CONFIG, LAUNCH_SCRIPT, TORCHRUN_SCRIPT, SLURM_SCRIPT,
             LAUNCH_README)
"""Every name a run folder's files and folders have (CHECKPOINT_PREFIX: the start of one);
tests/test_run_folder.py fails when another module spells one of them."""


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run's files (see the module docstring); none is created here."""

    root: Path

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunPaths:
        """The run a checkpoint folder (<run>/checkpoints/checkpoint-N) belongs to."""
        return cls(Path(checkpoint).parent.parent)

    def relative(self, path: Path) -> str:
        """`path` as messages name it: relative to the run folder, with / (e.g. logs/worker.log)."""
        return Path(path).relative_to(self.root).as_posix()

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def events(self) -> Path:
        return self.root / EVENTS

    @property
    def guard_state(self) -> Path:
        """The guard's remedies in effect (cpt_studio.core.guard.GuardState); config.json is never edited."""
        return self.root / GUARD_STATE

    @property
    def generations(self) -> Path:
        """Prompts, settings and outputs of Generate (cpt_studio.core.generate), one JSON object a line."""
        return self.root / GENERATIONS

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        """The checkpoint saved at optimizer step `step` (it may not exist)."""
        return self.checkpoints / checkpoint_dirname(step)

    @property
    def staging(self) -> Path:
        """Where the Trainer writes a checkpoint before it is renamed into checkpoints/."""
        return self.checkpoints / STAGING

    def staged_checkpoint(self, step: int) -> Path:
        """The Trainer's folder for the checkpoint at `step` while it is being written."""
        return self.staging / checkpoint_dirname(step)

    @property
    def heldout_dir(self) -> Path:
        return self.root / HELDOUT

    def heldout(self, name: str) -> Path:
        """The held-out documents of corpus `name` ("domain", "general"), JSON lines."""
        return self.heldout_dir / f"{name}{HELDOUT_SUFFIX}"

    @property
    def corpus_record(self) -> Path:
        """Each corpus's fingerprint and files when the run started (cpt_studio.core.data)."""
        return self.heldout_dir / CORPUS_RECORD

    @property
    def tokenizer(self) -> Path:
        """The run's extended tokenizer and its record, when it extends one."""
        return self.root / TOKENIZER

    @property
    def tokenizer_record(self) -> Path:
        return tokenizer_record(self.tokenizer)

    @property
    def chat_template(self) -> Path:
        """The chat template an SFT run renders its examples with (cpt_studio.core.sft_data)."""
        return self.root / CHAT_TEMPLATE

    @property
    def start_model(self) -> Path:
        """An SFT run's starting weights when its parent checkpoint is a LoRA adapter: the
        adapter merged into its base, an ordinary HF model folder (cpt_studio.core.sft_run)."""
        return self.root / START_MODEL

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def log(self) -> Path:
        return self.logs / WORKER_LOG

    @property
    def stop_request(self) -> Path:
        return self.root / STOP

    @property
    def pid(self) -> Path:
        return self.root / PID

    @property
    def claim(self) -> Path:
        """Created exclusively while a launcher checks for a live worker and starts one."""
        return self.root / CLAIM

    @property
    def eval_dir(self) -> Path:
        """Evaluation jobs (lm-eval tasks and probes): their own progress, stop and pid files,
        so that an evaluation never changes the training run's state."""
        return self.root / EVAL

    @property
    def eval_tasks(self) -> Path:
        """lm-eval task YAML and data written for the run (the probe tasks)."""
        return self.eval_dir / EVAL_TASKS

    @property
    def eval_events(self) -> Path:
        """The evaluation job's progress (status events); its scores go to events.jsonl."""
        return self.eval_dir / EVENTS

    @property
    def eval_request(self) -> Path:
        return self.eval_dir / EVAL_REQUEST

    @property
    def eval_stop(self) -> Path:
        return self.eval_dir / STOP

    @property
    def eval_pid(self) -> Path:
        return self.eval_dir / PID

    @property
    def eval_log(self) -> Path:
        return self.logs / EVAL_LOG

    def interpolation(self, step: int) -> Path:
        """The weight-interpolation curve between the base model and the checkpoint at `step`
        (JSON: the alphas and each one's evaluation; cpt_studio.core.interpolate)."""
        return self.root / INTERPOLATION / checkpoint_dirname(step) / INTERPOLATION_CURVE

    @property
    def sweep(self) -> Path:
        """A sweep's run only: the sweep it belongs to (its group id) and its setting (JSON;
        cpt_studio.core.sweep)."""
        return self.root / SWEEP

    @property
    def launch(self) -> Path:
        """The launch bundle: the run on several GPUs or nodes (cpt_studio.core.launch)."""
        return self.root / LAUNCH

    @property
    def accelerate_config(self) -> Path:
        return self.launch / ACCELERATE_CONFIG

    @property
    def deepspeed_config(self) -> Path:
        return self.launch / DEEPSPEED_CONFIG

    @property
    def launch_script(self) -> Path:
        return self.launch / LAUNCH_SCRIPT

    @property
    def torchrun_script(self) -> Path:
        return self.launch / TORCHRUN_SCRIPT

    @property
    def slurm_script(self) -> Path:
        return self.launch / SLURM_SCRIPT

    @property
    def launch_readme(self) -> Path:
        return self.launch / LAUNCH_README

    @property
    def report(self) -> Path:
        """The folder of report.md, report.json and the chart written by `cpt-studio report`."""
        return self.root / REPORT

    @property
    def report_markdown(self) -> Path:
        return self.report / REPORT_MARKDOWN

    @property
    def report_data(self) -> Path:
        return self.report / REPORT_DATA

    @property
    def report_chart(self) -> Path:
        return self.report / REPORT_CHART


def checkpoint_config(checkpoint: Path) -> Path:
    """The run's config frozen into a checkpoint folder (also into a staged or exported one):
    it names the base model a LoRA adapter goes on."""
    return Path(checkpoint) / CHECKPOINT_CONFIG


def tokenizer_record(folder: Path) -> Path:
    """The record written beside an extended tokenizer saved in `folder` (a run's tokenizer/,
    or any folder `cpt-studio tokenizer extend` saves into): the base it extends, the new
    tokens, the figures."""
    return Path(folder) / TOKENIZER_RECORD


def checkpoint_dirname(step: int) -> str:
    """"checkpoint-200": the folder of the checkpoint at `step`, and how events and messages
    name it (checkpoint-0 is the starting model, saved before the first step)."""
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_label(step: int) -> str:
    """How a list or a table shows the model at `step`: "base model" at 0, else its folder's
    name ("checkpoint-200")."""
    return "base model" if step == 0 else checkpoint_dirname(step)


def checkpoint_step(path: Path) -> int:
    """The optimizer step of a checkpoint folder (checkpoint-200 -> 200)."""
    return int(Path(path).name[len(CHECKPOINT_PREFIX):])


def disk_usage(run_dir: Path) -> tuple[int, int]:
    """(bytes of every file under the run folder, complete checkpoints in it): what deleting
    the folder frees."""
    return folder_size(Path(run_dir)), len(list_checkpoints(Path(run_dir)))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first."""
    folder = RunPaths(Path(run_dir)).checkpoints
    if not folder.exists():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_folder(run_dir: Path | str, step: int) -> Path:
    """The folder of a run's checkpoint at `step`; FileNotFoundError naming the ones that exist."""
    folder = RunPaths(Path(run_dir)).checkpoint(step)
    if not folder.is_dir():
        kept = ", ".join(str(checkpoint_step(p)) for p in list_checkpoints(Path(run_dir))) or "none"
        raise FileNotFoundError(f"{run_dir} has no checkpoint at step {step} (kept: {kept}); "
                                "choose one of those steps")
    return folder


def read_json(path: Path) -> dict:
    """A run's JSON file (config.json, a checkpoint's run_config.json) as a dict."""
    return json.loads(Path(path).read_text())
