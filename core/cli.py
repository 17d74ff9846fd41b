"""`cpt-studio`: the command line. It parses arguments and calls core functions, nothing more.

    cpt-studio corpus inspect corpus/domain.jsonl --tokenizer MODEL_FOLDER --preview 3
"""

from __future__ import annotations

import argparse
import json
import sys

from .corpus import CorpusError, SourceSpec


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpt-studio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(title="commands")
    corpus = commands.add_parser("corpus", help="check and count corpus sources").add_subparsers(title="corpus commands")
    inspect = corpus.add_parser("inspect", help="validate sources and print documents, tokens, fertility, a preview")
    inspect.add_argument("sources", nargs="+", help="files or folders (.jsonl, .txt, .parquet, optionally .gz)")
    inspect.add_argument("--tokenizer", required=True, help="model or tokenizer folder (or a cached hub id)")
    _source_options(inspect)
    inspect.add_argument("--preview", type=int, default=3, help="documents to show (default 3)")
    inspect.add_argument("--json", action="store_true", help="print the figures as JSON")
    inspect.set_defaults(run=_corpus_inspect)
    return parser


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-field", default="text", help="JSONL/Parquet field with the text (default: text)")
    parser.add_argument("--txt-mode", choices=["file", "blocks"], default="file",
                        help="plain text: one document per file, or per blank-line-separated block")
    parser.add_argument("--skip-bad", action="store_true", help="leave out bad records and count them")


def _specs(args) -> list[SourceSpec]:
    return [SourceSpec(path, args.text_field, args.txt_mode) for path in args.sources]


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

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


if __name__ == "__main__":
    sys.exit(main())
