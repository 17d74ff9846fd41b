"""What is in a corpus: documents, characters, words, tokens, fertility, extremes, a preview.

`corpus_stats` is what `cpt-studio corpus inspect` prints and what the wizard's corpus page
shows. Token counts come from the token store, so inspecting a corpus also prepares it
and a run started afterwards tokenizes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

from .corpus import Document, Problem, SourceSpec, read_sources
from .events import ProgressCallback
from .tokenstore import prepare


@dataclass
class DocumentSize:
    origin: str
    tokens: int
    characters: int


@dataclass
class CorpusStats:
    documents: int
    characters: int
    words: int
    tokens: int
    fertility: float
    """Tokens per whitespace-separated word."""
    longest: DocumentSize | None
    shortest: DocumentSize | None
    files: int
    skipped: list[Problem] = field(default_factory=list)
    preview: list[Document] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "documents": self.documents, "characters": self.characters, "words": self.words,
            "tokens": self.tokens, "fertility": self.fertility, "files": self.files,
            "longest": vars(self.longest) if self.longest else None,
            "shortest": vars(self.shortest) if self.shortest else None,
            "skipped": [str(p) for p in self.skipped],
            "preview": [{"origin": f"{d.file}:{d.line}", "text": d.text} for d in self.preview],
        }


def corpus_stats(specs: list[SourceSpec], tokenizer, *, preview: int = 5, skip_bad: bool = False,
                 progress: ProgressCallback | None = None) -> CorpusStats:
    """Raises CorpusError (every problem listed) when records are bad and not skipped."""
    store = prepare(specs, tokenizer, skip_bad=skip_bad, progress=progress)
    lengths = store.doc_lengths()
    words = int(store.doc_words.sum())
    return CorpusStats(
        documents=store.n_docs, characters=int(store.doc_chars.sum()), words=words,
        tokens=store.n_tokens, fertility=store.n_tokens / words if words else 0.0,
        longest=_size(store, int(lengths.argmax())) if store.n_docs else None,
        shortest=_size(store, int(lengths.argmin())) if store.n_docs else None,
        files=len(store.meta["files"]), skipped=store.skipped,
        preview=[d for d in islice(_documents(specs), preview)],
    )


def _documents(specs):
    return (item for item in read_sources(specs) if isinstance(item, Document))


def _size(store, i: int) -> DocumentSize:
    return DocumentSize(store.origin(i), int(store.doc_lengths()[i]), int(store.doc_chars[i]))


def format_stats(stats: CorpusStats, width: int = 100) -> str:
    lines = [
        f"documents   {stats.documents:,} in {stats.files} file(s)",
        f"characters  {stats.characters:,}",
        f"words       {stats.words:,}",
        f"tokens      {stats.tokens:,}",
        f"fertility   {stats.fertility:.3f} tokens per word",
    ]
    if stats.longest:
        lines.append(f"longest     {stats.longest.tokens:,} tokens ({stats.longest.origin})")
        lines.append(f"shortest    {stats.shortest.tokens:,} tokens ({stats.shortest.origin})")
    if stats.skipped:
        lines.append(f"skipped     {len(stats.skipped)} bad record(s); first: {stats.skipped[0]}")
    for doc in stats.preview:
        text = " ".join(doc.text.split())
        lines.append(f"  {doc.file}:{doc.line}  {text[:width]}{'…' if len(text) > width else ''}")
    return "\n".join(lines)
