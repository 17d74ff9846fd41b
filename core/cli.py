"""`cpt-studio`: the command line. It parses arguments and calls core functions, nothing more.

    cpt-studio demo                              # a short real CPT run on the bundled demo
    cpt-studio corpus inspect corpus/domain.jsonl --tokenizer MODEL_FOLDER --preview 3
    cpt-studio tokenizer extend config.json [--min-frequency 5] [--apply]
    cpt-studio train config.json [--dry-run [--probe STEPS]] [--detach]
    cpt-studio train stage2.json                 # with parent_run/parent_step: a second stage from a checkpoint
    cpt-studio sft RUN --data qa.jsonl [--checkpoint STEP] [--method lora] [--dry-run]   # instruction tuning
    cpt-studio resume RUN | stop RUN | runs | show RUN | store rebuild
    cpt-studio launch RUN --gpus 8 [--nodes 2] [--strategy ddp|fsdp|deepspeed]   # several GPUs / a cluster
    cpt-studio import-gguf model.gguf
    cpt-studio generate RUN --prompt "The patient" [--checkpoints 100,200] [--sample]
    cpt-studio export RUN CHECKPOINT_STEP DEST [--mode merged|adapter|full] [--dataset NAME] [--tag TAG]
    cpt-studio interpolate RUN --checkpoint STEP --alpha 0,0.5,1 [--export 0.5 --to DEST]
    cpt-studio suggest-replay config.json        # the domain's distance and a replay ratio
    cpt-studio sweep config.json --replay 0,0.05 --lr 1e-5,3e-5 --steps 50   # find settings
    cpt-studio desktop install | uninstall       # the app in a Linux desktop's applications menu
    cpt-studio evaluate RUN [--checkpoints 10,20] [--tasks a,b] [--probes FILE] [--limit N] [--detach]
    cpt-studio tasks [WORD] | report RUN
    cpt-studio settings [WORD]                   # every setting of a config file, with its help

An option that sets a RunConfig field shows that field's docstring as its help
(cpt_studio.core.config_help.option_help).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from .config_help import find_settings, format_settings, option_help
from .corpus import CorpusError, SourceSpec
from .disk import DiskFullError
from .hf_imports import transformers_names
from .models import ModelError
from .run_folder import GENERATIONS


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # here, where a reader that left is caught, not at the interpreter's exit
        return code
    except (CorpusError, ModelError, ValueError, LookupError, FileNotFoundError, FileExistsError,
            DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a run's worker started (a followed run handles its own)
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left early (`cpt-studio runs | head`): end quietly, as Python's docs advise
        # (library/signal.html, "Note on SIGPIPE"), not with a traceback; a followed run goes on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpt-studio", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands")
    corpus = commands.add_parser("corpus", help="check and count corpus sources").add_subparsers(title="corpus commands")
    inspect = corpus.add_parser("inspect", help="validate sources and print documents, tokens, fertility, a preview")
    inspect.add_argument("sources", nargs="+", help="files or folders (.jsonl, .txt, .parquet, optionally .gz; a .json array as a file)")
    inspect.add_argument("--tokenizer", required=True, help="model or tokenizer folder (or a cached hub id)")
    _source_options(inspect)
    inspect.add_argument("--preview", type=int, default=3, help="documents to show (default 3)")
    inspect.add_argument("--json", action="store_true", help="print the figures as JSON")
    inspect.set_defaults(run=_corpus_inspect)
    _tokenizer_commands(commands)
    _run_commands(commands)
    from . import cli_tradeoff

    cli_tradeoff.add_commands(commands)
    from . import cli_sweep

    cli_sweep.add_commands(commands)
    settings = commands.add_parser("settings", help="every setting of a run config file: its path, "
                                   "type, default and meaning")
    settings.add_argument("query", nargs="?", default="", metavar="WORD",
                          help="only the settings whose path or help contains WORD (any case)")
    settings.set_defaults(run=_settings)
    return parser


def _settings(args) -> int:
    print(format_settings(args.query))
    return 0 if find_settings(args.query) else 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cpt-studio")
    except PackageNotFoundError:
        return "(not installed)"


def _tokenizer_commands(commands) -> None:
    tokenizer = commands.add_parser("tokenizer", help="domain tokenizer extension").add_subparsers(
        title="tokenizer commands")
    extend = tokenizer.add_parser(
        "extend", help="find domain words to add as tokens and show them with the fertility before "
                       "and after; changes nothing unless --apply")
    extend.add_argument("target", help="a RunConfig JSON file, or a run folder that has not trained yet")
    for option, name in (("--vocab-size", "vocab_size"), ("--min-frequency", "min_frequency"),
                         ("--max-new-tokens", "max_new_tokens"), ("--min-length", "min_length"),
                         ("--pattern", "token_pattern")):
        extend.add_argument(option, dest=name, type=str if name == "token_pattern" else int,
                            help=option_help(f"tokenizer.{name}", "default: the config's, {} unless it sets one"))
    extend.add_argument("--top", type=int, default=20, help="candidates to list (default 20)")
    extend.add_argument("--json", action="store_true", help="print everything as JSON")
    extend.add_argument("--apply", action="store_true", help="save the extension into the run folder (for a "
                        "config file: a new run folder), so that the run trains with it")
    extend.set_defaults(run=_tokenizer_extend)


def _run_commands(commands) -> None:
    from . import cli_runs

    train = commands.add_parser("train", help="start a run from a config file (JSON)")
    train.add_argument("config", help="a RunConfig JSON file (`cpt-studio settings` lists its settings)")
    train.add_argument("--dry-run", action="store_true", help="print the plan (steps, memory, time, warnings) and stop")
    train.add_argument("--probe", type=int, default=None, metavar="STEPS",
                       help="with --dry-run: measure the speed with a few real steps")
    train.add_argument("--detach", action="store_true", help="run in the background and return at once "
                       "(`cpt-studio stop RUN` stops it; without it, Ctrl-C asks the run to stop and save)")
    train.set_defaults(run=cli_runs.train)
    resume = commands.add_parser("resume", help="continue a run from its last complete checkpoint")
    resume.add_argument("run_dir", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    resume.add_argument("--detach", action="store_true", help="resume in the background and return at once "
                        "(`cpt-studio stop RUN` stops it; without it, Ctrl-C asks the run to stop and save)")
    resume.add_argument("--accept-changed-corpus", action="store_true",
                        help="resume although the corpus files changed since the run started (the "
                             "saved held-out documents stay the evaluation set)")
    resume.set_defaults(run=cli_runs.resume)
    launch = commands.add_parser("launch", help="write the run's launch bundle (in the run folder): "
                                 "accelerate config, launch script, torchrun line, Slurm template, README")
    launch.add_argument("run_dir", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    launch.add_argument("--gpus", type=int, required=True, help="GPUs on each machine (processes per node)")
    launch.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    launch.add_argument("--strategy", choices=("ddp", "fsdp", "deepspeed"), default="ddp",
                        help="ddp: a copy of the model per GPU; fsdp: FSDP2, weights and optimizer "
                             "sharded; deepspeed: ZeRO-2 (needs `pip install deepspeed`)")
    launch.add_argument("--cpu", action="store_true", help="CPU processes over gloo (to try the bundle "
                                                            "on a machine without GPUs)")
    launch.add_argument("--port", type=int, default=29500, help="the main process's port (default 29500)")
    launch.set_defaults(run=cli_runs.launch_bundle)
    stop = commands.add_parser("stop", help="ask a run to save a checkpoint and stop")
    stop.add_argument("run_dir", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    stop.add_argument("--kill", action="store_true",
                      help="end the worker at once (and its children) instead of asking it to save and stop")
    stop.set_defaults(run=cli_runs.stop)
    demo = commands.add_parser("demo", help="a short real CPT run on the demo model and corpus")
    demo.add_argument("--steps", type=int, default=None,
                      help=option_help("schedule.max_steps", "default: the demo's own"))
    demo.set_defaults(run=cli_runs.demo)
    gguf = commands.add_parser("import-gguf", help="import a GGUF file once into an HF model folder")
    gguf.add_argument("file")
    gguf.add_argument("--dest", default=None, help="the folder to create (default: in the data folder)")
    gguf.set_defaults(run=cli_runs.import_gguf)
    runs = commands.add_parser("runs", help="list the runs, newest first (those in progress too)")
    runs.add_argument("--state", default=None, help="only runs in this state (created, running, stopped, "
                      "finished, failed)")
    runs.add_argument("--model", default=None, help="only runs whose model contains this text")
    runs.set_defaults(run=cli_runs.list_runs)
    show = commands.add_parser("show", help="the key numbers of a run's curves")
    show.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    show.set_defaults(run=cli_runs.show)
    _checkpoint_commands(commands)
    _desktop_commands(commands)
    from . import cli_eval, cli_sft

    cli_eval.add_commands(commands)
    cli_sft.add_commands(commands)
    store = commands.add_parser("store", help="the run store").add_subparsers(title="store commands")
    rebuild = store.add_parser("rebuild", help="re-index every run folder into the store")
    rebuild.add_argument("roots", nargs="*", help="folders holding run folders (default: the data folder's runs)")
    rebuild.set_defaults(run=cli_runs.rebuild)
    forget = store.add_parser("forget", help="remove a run from the history (rebuild keeps it out)")
    forget.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    forget.add_argument("--delete-folder", action="store_true",
                        help="also delete the run's folder with its checkpoints")
    forget.add_argument("--undo", action="store_true",
                        help="bring a forgotten run back into the history (RUN: its folder)")
    forget.set_defaults(run=cli_runs.forget)


def _desktop_commands(commands) -> None:
    desktop = commands.add_parser("desktop", help="the app's launcher in a Linux desktop's menu").add_subparsers(
        title="desktop commands")
    install = desktop.add_parser("install", help="add CPT Studio to the applications menu (desktop entry, "
                                 "icons, AppStream metadata under ~/.local/share)")
    install.set_defaults(run=_desktop_install)
    uninstall = desktop.add_parser("uninstall", help="remove what `desktop install` added")
    uninstall.set_defaults(run=_desktop_uninstall)


def _desktop_install(args) -> int:
    from .desktop import install_desktop_entry

    try:
        files = install_desktop_entry()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"added CPT Studio to the applications menu: {files['entry']}")
    print(f"it starts {files['entry'].read_text().split('Exec=', 1)[1].splitlines()[0]}")
    return 0


def _desktop_uninstall(args) -> int:
    from .desktop import uninstall_desktop_entry

    removed = uninstall_desktop_entry()
    print(f"removed {len(removed)} files" if removed else "CPT Studio had no desktop entry to remove")
    return 0


def _checkpoint_commands(commands) -> None:
    from . import cli_runs

    generate = commands.add_parser("generate", help="continue a prompt with the base model and "
                                   f"checkpoints, side by side (kept in the run's {GENERATIONS})")
    generate.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--checkpoints", default=None, metavar="STEPS",
                          help="comma-separated checkpoint steps (default: every kept checkpoint)")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    generate.add_argument("--temperature", type=float, default=0.8)
    generate.add_argument("--top-p", type=float, default=0.95)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--json", action="store_true", help="print the outputs as JSON")
    generate.set_defaults(run=cli_runs.generate)
    export = commands.add_parser("export", help="write a checkpoint as an HF folder with its "
                                 "tokenizer and a model card")
    export.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    export.add_argument("step", type=int, metavar="CHECKPOINT_STEP")
    export.add_argument("dest", help="a new or empty folder")
    export.add_argument("--mode", choices=["full", "merged", "adapter"], default=None,
                        help="full (a full checkpoint), merged (LoRA merged into the base: one model "
                             "folder) or adapter (the LoRA adapter alone); default: as trained")
    export.add_argument("--merge", action="store_true", help="the same as --mode merged")
    export.add_argument("--dataset", action="append", default=[], metavar="NAME",
                        help="a dataset the model was trained on, named in the model card's "
                             "metadata (a Hub dataset id); repeat for several")
    export.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="a tag for the model card's metadata; repeat for several")
    export.set_defaults(run=cli_runs.export)


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-field", default="text", help=option_help("corpus.domain[].text_field"))
    parser.add_argument("--txt-mode", choices=["file", "blocks"], default="file",
                        help=option_help("corpus.domain[].txt_mode"))
    parser.add_argument("--skip-bad", action="store_true", help=option_help("corpus.skip_bad"))


def _specs(args) -> list[SourceSpec]:
    return [SourceSpec(path, args.text_field, args.txt_mode) for path in args.sources]


def load_tokenizer(spec: str):
    (AutoTokenizer,) = transformers_names("AutoTokenizer")

    try:
        return AutoTokenizer.from_pretrained(spec)
    except OSError as exc:
        raise SystemExit(f"error: cannot load a tokenizer from {spec!r}: {exc}") from exc


def _progress_bar(desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=" docs", file=sys.stderr, disable=None)

    def update(event: dict) -> None:
        bar.update(event["documents"] - bar.n)
        bar.set_postfix(tokens=f"{event['tokens']:,}", refresh=False)
        if event.get("done"):
            bar.close()

    return update


def _corpus_inspect(args) -> int:
    from .stats import corpus_stats, format_stats

    stats = corpus_stats(_specs(args), load_tokenizer(args.tokenizer), preview=args.preview,
                         skip_bad=args.skip_bad, progress=_progress_bar("tokenizing"))
    print(json.dumps(stats.to_dict(), indent=2) if args.json else format_stats(stats))
    return 0


def _tokenizer_extend(args) -> int:
    from .config import RunConfig
    from .models import load_tokenizer
    from .run_folder import RunPaths
    from .runs import create_run
    from .tokenizer_ext import apply_extension, format_preview, preview_for_config

    target = Path(args.target)
    config = RunConfig.load(RunPaths(target).config if target.is_dir() else target)
    settings = ("vocab_size", "min_frequency", "max_new_tokens", "min_length", "token_pattern")
    config.tokenizer = replace(config.tokenizer, **{name: getattr(args, name) for name in settings
                                                    if getattr(args, name) is not None})
    problems = config.tokenizer.validate()
    if problems:
        raise ValueError("; ".join(problems))
    base = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
    preview = preview_for_config(config, base)
    print(json.dumps(preview.to_dict(), indent=1, ensure_ascii=False) if args.json
          else format_preview(preview, args.top))
    if args.apply:
        run_dir = target if target.is_dir() else create_run(config)
        apply_extension(run_dir, preview, base)
        print(f"applied into {run_dir}; start it with: cpt-studio resume {run_dir}",
              file=sys.stderr if args.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
