"""The CLI's trade-off tools: weight interpolation and the replay suggestion.

    cpt-studio interpolate RUN --checkpoint 200 --alpha 0,0.25,0.5,0.75,1 [--export 0.5 --to FOLDER]
    cpt-studio suggest-replay config.json

Each parses nothing (cpt_studio.core.cli did) and calls the library.
"""

from __future__ import annotations

from pathlib import Path

from .cli_runs import run_folder
from .run_folder import checkpoint_label


def add_commands(commands) -> None:
    """The trade-off subcommands, added to the CLI's subparsers."""
    interpolate = commands.add_parser(
        "interpolate", help="evaluate the weights between the base model and a checkpoint "
        "(θ = θ_base + α·(θ_ckpt − θ_base)) and export a chosen α")
    interpolate.add_argument("run_ref", metavar="RUN", help="run folder, name, or a unique prefix of its folder name")
    interpolate.add_argument("--checkpoint", type=int, required=True, metavar="STEP",
                             help="the checkpoint at α = 1")
    interpolate.add_argument("--alpha", default="0,0.25,0.5,0.75,1", metavar="ALPHAS",
                             help="comma-separated α values to evaluate (0: the base model, 1: the "
                                  "checkpoint; default 0,0.25,0.5,0.75,1)")
    interpolate.add_argument("--export", type=float, default=None, metavar="ALPHA",
                             help="write the model at this α as an HF folder (needs --to)")
    interpolate.add_argument("--to", default=None, metavar="FOLDER", help="a new or empty folder for --export")
    interpolate.set_defaults(run=interpolate_run)
    suggest = commands.add_parser(
        "suggest-replay", help="measure how far the domain is from general text for the base "
        "model, and suggest a replay ratio with the reason")
    suggest.add_argument("config", help="a RunConfig JSON file (its model, domain and general corpus)")
    suggest.add_argument("--max-characters", type=int, default=100_000,
                         help="characters of each corpus sampled (its first documents; default 100000)")
    suggest.set_defaults(run=suggest_replay_run)


def interpolate_run(args) -> int:
    from .interpolate import export_interpolated, format_curve, interpolation_curve, parse_alphas

    if (args.export is None) != (args.to is None):
        raise ValueError("--export ALPHA and --to FOLDER go together: give both, or neither")
    run_dir = run_folder(args.run_ref)
    curve = interpolation_curve(run_dir, args.checkpoint, parse_alphas(args.alpha))
    print(f"base model -> {checkpoint_label(args.checkpoint)} ({curve.method}); gains against the "
          "run's step-0 baseline")
    print(format_curve(curve))
    if args.export is not None:
        folder = export_interpolated(run_dir, args.checkpoint, args.export, Path(args.to))
        print(f"exported α = {args.export:g} to {folder}")
    return 0


def suggest_replay_run(args) -> int:
    from .config import RunConfig
    from .domain_distance import format_suggestion, measure_distance, suggest_replay

    config = RunConfig.load(Path(args.config))
    distance = measure_distance(config, max_characters=args.max_characters)
    suggestion = suggest_replay(distance)
    print(format_suggestion(distance, suggestion))
    if abs(config.corpus.replay_ratio - suggestion.replay_ratio) > 1e-9:
        print(f"the config's replay ratio is {config.corpus.replay_ratio:.0%}; set corpus.replay_ratio "
              f"to {suggestion.replay_ratio:g} to follow the suggestion")
    return 0
