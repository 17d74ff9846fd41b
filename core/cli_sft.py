"""The CLI's instruction-tuning command: an SFT run chained from a checkpoint of an earlier run.

    cpt-studio sft PARENT_RUN --data qa.jsonl [--checkpoint STEP] [--method lora] [--epochs 3]
                   [--instruction-field question --response-field answer] [--template plain]
    cpt-studio sft --config sft.json               # a config file with stage "sft"
    cpt-studio sft PARENT_RUN --data qa.jsonl --dry-run [--probe 5]   # the plan, no run
    cpt-studio sft PARENT_RUN --data qa.jsonl --save-config sft.json  # the config, to edit

It parses nothing (cpt_studio.core.cli did) and calls the library (cpt_studio.core.sft_run):
the run is an ordinary run folder, followed like `cpt-studio train`'s.
"""

from __future__ import annotations

from pathlib import Path

from .config import SFT_FORMATS, RunConfig
from .config_help import option_help

FIELDS = ("instruction_field", "input_field", "response_field", "system_field", "messages_field")


def add_commands(commands) -> None:
    sft = commands.add_parser("sft", help="instruction-tune a checkpoint of a run (loss on the "
                              "responses only), as a new run chained to it")
    sft.add_argument("parent", nargs="?", metavar="PARENT_RUN",
                     help="the run to start from: its folder, name, or a unique prefix of its folder name")
    sft.add_argument("--checkpoint", type=int, metavar="STEP",
                     help="the parent's checkpoint (default: its recommended one, else its last)")
    sft.add_argument("--data", action="append", metavar="FILE", help=option_help("sft.data", "repeat for several files"))
    sft.add_argument("--config", metavar="FILE", help="a RunConfig JSON file with stage 'sft' instead "
                     "of PARENT_RUN and the options (`cpt-studio settings sft` lists its settings)")
    sft.add_argument("--format", choices=SFT_FORMATS, help=option_help("sft.format"))
    for name in FIELDS:
        sft.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="FIELD", help=option_help(f"sft.{name}"))
    sft.add_argument("--template", help=option_help("sft.template"))
    sft.add_argument("--method", choices=("full", "lora"), help=option_help("method.kind", "default: the parent's"))
    # The schedule's own help speaks of CPT (a low LR, passes over the domain corpus): SFT's here.
    sft.add_argument("--lr", type=float, help="schedule.peak_lr: the peak learning rate (default for SFT "
                     "2e-5, 2e-4 with LoRA)")
    sft.add_argument("--skip-bad", action="store_true", help=option_help("sft.skip_bad"))
    sft.add_argument("--epochs", type=float, help="schedule.epochs: passes over the instruction data "
                     "(default for SFT 3)")
    sft.add_argument("--max-steps", type=int, help="schedule.max_steps: optimizer steps (instead of --epochs)")
    sft.add_argument("--seq-len", type=int, metavar="TOKENS", help=option_help("batch.seq_len", "default: the parent's"))
    sft.add_argument("--heldout-count", type=int, metavar="N", help="eval.heldout_count: instruction examples "
                     "held out and scored on their responses (default: eval.heldout_fraction of them)")
    sft.add_argument("--replay", type=float, default=0.0, metavar="RATIO",
                     help=option_help("corpus.replay_ratio", "default for SFT 0: the general corpus "
                                      "is measured, not replayed"))
    sft.add_argument("--name", help="the run's name (default: the parent's with ' SFT')")
    sft.add_argument("--detach", action="store_true", help="run in the background and return at once")
    sft.add_argument("--dry-run", action="store_true", help="print the plan (instruction examples, "
                     "steps, memory, time, warnings) and stop; no run folder is made")
    sft.add_argument("--probe", type=int, default=None, metavar="STEPS",
                     help="with --dry-run: measure the speed with a few real steps")
    sft.add_argument("--save-config", metavar="FILE", help="write the SFT run's config (JSON) to FILE "
                     "and stop: edit it, then `cpt-studio sft --config FILE`")
    sft.add_argument("--preview", type=int, default=0, metavar="N",
                     help="print the first N examples as the model will see them (the trained "
                          "responses between ⟦ ⟧) and the template, then stop")
    sft.set_defaults(run=sft_command)


def sft_command(args) -> int:
    from .cli_runs import launch, print_plan, refuse_probe_without_dry_run
    from .sft_run import create_sft_run

    refuse_probe_without_dry_run(args)
    config = _config(args)
    if args.preview:
        return _preview(config, args.preview)
    if args.save_config:
        Path(args.save_config).write_text(config.to_json() + "\n", encoding="utf-8")
        print(f"config written to {args.save_config}; edit it, then: cpt-studio sft --config {args.save_config}")
        return 0
    if args.dry_run:
        return print_plan(config, args.probe or 0)
    if config.parent_run:
        print(f"starting from {config.parent_run}, checkpoint at step {config.parent_step}")
    return launch(create_sft_run(config), resume=False, detach=args.detach)


def _config(args) -> RunConfig:
    """The config from --config, or from PARENT_RUN and the options."""
    from .cli_runs import run_folder
    from .sft_run import default_checkpoint, sft_config

    if args.config:
        config = RunConfig.load(Path(args.config))
        if config.stage != "sft":
            raise ValueError(f"{args.config}: stage is {config.stage!r}; set \"stage\": \"sft\" "
                             "(or run it with `cpt-studio train`)")
        return config
    if not args.parent or not args.data:
        raise ValueError("name the parent run and the data (cpt-studio sft PARENT_RUN --data FILE), "
                         "or give a config file (--config FILE)")
    parent = run_folder(args.parent)
    step = args.checkpoint
    if step is None:
        step, why = default_checkpoint(parent)
        print(f"checkpoint: step {step}, {why}")
    config = sft_config(parent, step, args.data, name=args.name, method=args.method, replay_ratio=args.replay)
    for name in FIELDS + ("format", "template"):
        if getattr(args, name) is not None:
            setattr(config.sft, name, getattr(args, name))
    config.sft.skip_bad = args.skip_bad
    for option, section, name in (("lr", config.schedule, "peak_lr"), ("epochs", config.schedule, "epochs"),
                                  ("max_steps", config.schedule, "max_steps"), ("seq_len", config.batch, "seq_len"),
                                  ("heldout_count", config.eval, "heldout_count")):
        if getattr(args, option) is not None:
            setattr(section, name, getattr(args, option))
    return config


def _preview(config: RunConfig, count: int) -> int:
    """The first examples rendered with the template the run would choose, responses marked."""
    from .sft_data import format_preview
    from .sft_run import preview_examples

    shown = preview_examples(config, count)
    print(f"{shown.count:,} examples; template: {shown.template}")
    for problem in shown.skipped:  # sft.skip_bad
        print(f"left out: {problem}")
    for origin, pieces in shown.examples:
        print(f"\n--- {origin}\n{format_preview(pieces)}")
    return 0
