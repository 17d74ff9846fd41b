"""Instruction-tuning (SFT) data: records read and checked with file and line, turned into
chat messages, rendered through a chat template, labelled so that only the responses count,
and packed into rows.

    examples = read_examples(config.sft)              # SftDataError lists every bad record
    template = choose_template(tokenizer, config.sft.template)   # ChatTemplate(text, source)
    ids, labels = tokenize_conversation(tokenizer, template.text, examples[0].messages)
    rows = PackedExamples(tokenize_examples(tokenizer, template.text, examples, 1024), 1024, pad_id)
    generation_prompt(checkpoint_tokenizer, [{"role": "user", "content": "..."}])  # to answer

Records: JSON lines, either an instruction and its response (field names configurable, an
optional system prompt and an optional input appended to the instruction), or a list of chat
messages ({"role": "system" | "user" | "assistant", "content": ...}). Both become messages,
and everything after is the same for both.

Which tokens are the response: each assistant message's characters are found by rendering
the conversation up to the message with the generation prompt (the prompt the model would be
given), and up to the message included; the difference is the message as the template
writes it, its end-of-turn token included (so the model learns to stop), cut after the
tokenizer's eos token when the message holds one (what a template writes after it, a newline,
is never generated, so it is not a target: TRL's assistant masks end there too). The full
conversation is tokenized once with character offsets, and a token is a response token when
it overlaps such a span (the rule transformers' return_assistant_tokens_mask uses). Working on
characters, not on separately tokenized prefixes, keeps a token merged across the boundary
from shifting the spans. This works for every template that renders a conversation's start
the same whether or not more follows (all common ones); `{% generation %}` markers, which
return_assistant_tokens_mask needs, are rare in real templates. A template that renders a
prefix differently is refused with a message saying so. Every other token (system prompt,
user turns, role headers) is labelled -100.

Rows: examples are laid end to end in their order, each whole (one cut to seq_len tokens if
longer), a new row begun when the next one does not fit; position ids restart at 0 for each
example, and the rows go through the same Trainer path as CPT's packed rows (no attention
mask, cache off), so examples in a row never attend to each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import SftConfig, data_file_problem
from .corpus import JSON_KINDS, Problem, file_kind, jsonl_objects
from .document_tokens import added_bos_id
from .packing import IGNORE_INDEX, padded_row

ROLES = ("system", "user", "assistant")

PLAIN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{%- else -%}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Response:\\n' }}{%- endif -%}"
)
"""Our plain template, for a base model whose tokenizer has no chat template: a CPT model is
usually a base model, and no library template fits it (each belongs to one model family and
uses that family's special tokens, which a base vocabulary may lack). Alpaca's headers in plain
text: an optional system prompt, "### Instruction:", "### Response:", the response ended by the
tokenizer's eos token, so that generation stops there. A tokenizer that adds a BOS before text
gets one at the start (choose_template)."""


class SftDataError(ValueError):
    """The instruction data has problems; `problems` lists every one, each with file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the instruction data:\n{shown}{more}")


@dataclass
class SftExample:
    messages: list[dict]
    """[{"role": ..., "content": ...}, ...]: the conversation, its last message the assistant's."""
    file: str
    line: int

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"

    def response_text(self) -> str:
        return "".join(m["content"] for m in self.messages if m["role"] == "assistant")


# ------------------------------------------------------------------------- reading records

def data_files(folder: Path) -> list[Path]:
    """The instruction data files directly in `folder` (by name, hidden ones left out), sorted:
    what "Add folder..." adds, one entry each (sft.data lists files)."""
    return sorted(path for path in Path(folder).iterdir() if path.is_file() and not path.name.startswith(".")
                  and file_kind(path) in JSON_KINDS)


def read_examples(settings: SftConfig) -> list[SftExample]:
    """Every example of every file of sft.data, in order; SftDataError with every problem (with
    sft.skip_bad, the bad records are left out instead: skipped_records names them)."""
    return read_examples_and_skipped(settings)[0]


def skipped_records(settings: SftConfig) -> list[Problem]:
    """The bad records sft.skip_bad leaves out, each with file and line ([] with it off)."""
    return read_examples_and_skipped(settings)[1] if settings.skip_bad else []


def read_examples_and_skipped(settings: SftConfig) -> tuple[list[SftExample], list[Problem]]:
    """(the examples, the bad records skipped); SftDataError with every problem that remains:
    every bad record with sft.skip_bad off, and with it on a file that cannot be read or data
    with no good record at all."""
    examples, problems = [], []
    for path in settings.data:
        for item in _file_examples(Path(path).expanduser(), settings):
            (problems if isinstance(item, Problem) else examples).append(item)
    if not settings.data:
        problems.append(Problem("(no data)", None, "add at least one JSONL file to sft.data (--data FILE)"))
    elif not examples and not problems:
        problems.append(Problem(", ".join(settings.data), None, "holds no records; add examples"))
    skipped = [p for p in problems if p.line is not None] if settings.skip_bad and examples else []
    if skipped:
        problems = [p for p in problems if p.line is None]
    if problems:
        raise SftDataError(problems)
    return examples, skipped


def _file_examples(path: Path, settings: SftConfig) -> Iterator[SftExample | Problem]:
    problem = data_file_problem(path)
    if problem:
        yield Problem(str(path), None, problem)
        return
    for item in jsonl_objects(path, "an object (one example)"):
        if isinstance(item, Problem):
            yield item
            continue
        record, line = item
        messages = record_messages(record, settings)
        yield (Problem(str(path), line, messages) if isinstance(messages, str)
               else SftExample(messages, str(path), line))


def record_messages(record: dict, settings: SftConfig) -> list[dict] | str:
    """The record's conversation as messages, or what is wrong with it (with the fix). With the
    default field names, the two layouts most instruction data comes in read as they are:
    ShareGPT's `conversations` and Alpaca's `output` (SHAREGPT_FIELD, ALPACA_RESPONSE)."""
    fmt = settings.format
    messages_field = _default_or_known(record, settings, "messages_field", SHAREGPT_FIELD)
    if fmt == "chat" or (fmt == "auto" and messages_field in record):
        return _chat_messages(record, messages_field)
    if fmt == "instruction" or settings.instruction_field in record:
        return _instruction_messages(record, settings)
    fields = ", ".join(sorted(record)) or "none"
    return (f"neither an instruction field '{settings.instruction_field}' nor a messages field "
            f"'{settings.messages_field}' (fields: {fields}); name the record's fields with "
            "sft.instruction_field and sft.response_field (--instruction-field, --response-field) "
            "or sft.messages_field (--messages-field)")


SHAREGPT_FIELD, ALPACA_RESPONSE = "conversations", "output"
"""The fields ShareGPT's conversations and Alpaca's responses are in."""


def _default_or_known(record: dict, settings: SftConfig, name: str, known: str) -> str:
    """The field `name` of the settings; when it is the default and the record lacks it, the
    widely used `known` one the record has instead (else the default, whose absence is named)."""
    chosen = getattr(settings, name)
    default = SftConfig.__dataclass_fields__[name].default
    return known if chosen == default and chosen not in record and known in record else chosen


FIELD_ALIASES = {"instruction": ("instruction", "prompt", "question", "query"),
                 "response": ("output", "answer", "completion", "response", "target")}
"""Field names other instruction datasets use (Alpaca: instruction/input/output), suggested when
the configured field is missing."""


def _instruction_messages(record: dict, settings: SftConfig) -> list[dict] | str:
    fields = ", ".join(sorted(record)) or "none"
    response_field = _default_or_known(record, settings, "response_field", ALPACA_RESPONSE)
    for name, option in ((settings.instruction_field, "instruction"), (response_field, "response")):
        if name not in record:
            likely = next((f for f in FIELD_ALIASES[option] if f in record), None)
            hint = f"'{likely}' (it looks like the {option})" if likely else f"the field that holds the {option}"
            return (f"no field '{name}' (fields: {fields}); set the {option} field (sft.{option}_field, "
                    f"--{option}-field) to {hint}")
    messages = []
    for name, role in ((settings.system_field, "system"), (settings.instruction_field, "user"),
                       (response_field, "assistant")):
        optional = role == "system"
        if optional and (not name or record.get(name) in (None, "")):
            continue
        problem = text_problem(record[name], f"field '{name}'")
        if problem:
            return problem
        messages.append({"role": role, "content": record[name]})
    extra = record.get(settings.input_field) if settings.input_field else None
    if extra not in (None, ""):
        problem = text_problem(extra, f"field '{settings.input_field}'")
        if problem:
            return problem
        messages[-2]["content"] += "\n\n" + extra  # the input follows the instruction
    return messages


def _chat_messages(record: dict, field_name: str) -> list[dict] | str:
    messages = record.get(field_name)
    if not isinstance(messages, list) or not messages:
        return (f"field '{field_name}' must be a non-empty list of {{\"role\", \"content\"}} "
                f"messages; it is {json.dumps(messages)[:40]}")
    messages = [_openai_form(m) for m in messages]
    for i, message in enumerate(messages):
        where = f"{field_name}[{i}]"
        if not isinstance(message, dict):
            return f"{where} must be an object with a role ({', '.join(ROLES)}) and a content"
        if message.get("role") not in ROLES:
            return (f"{where}'s role is {json.dumps(message.get('role'))}; a role is one of "
                    f"{', '.join(ROLES)} (ShareGPT's human and gpt are read as user and assistant)")
        problem = text_problem(message.get("content"), f"{where}.content")
        if problem:
            return problem
    roles = [m["role"] for m in messages]
    if roles[-1] != "assistant":
        return (f"the last message is the {roles[-1]}'s: a conversation must end with the assistant's "
                "response (only responses are trained); remove the trailing messages or add the response")
    if "user" not in roles[:roles.index("assistant")]:
        return "the first assistant message must follow a user message; add the user's turn"
    return [{"role": m["role"], "content": m["content"]} for m in messages]


SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}
"""ShareGPT's speakers ({"from": "human", "value": ...}) by the roles chat templates take."""


def _openai_form(message):
    """A ShareGPT message ({"from", "value"}) as {"role", "content"}; anything else as it is."""
    if not isinstance(message, dict) or "role" in message or "from" not in message:
        return message
    return {"role": SHAREGPT_ROLES.get(message["from"], message["from"]), "content": message.get("value")}


def text_problem(value, what: str) -> str | None:
    """What is wrong with a message's text (not text, empty, not valid Unicode), or None."""
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        return f"{what} is {kind}, not text"
    if not value.strip():
        return f"{what} is empty; remove the record or fill it in"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{what} is not valid Unicode: a lone surrogate at character {exc.start + 1} (half "
                "of an emoji or of a character cut in two); fix the record")
    return None


# ------------------------------------------------------------------------------ the template

@dataclass(frozen=True)
class ChatTemplate:
    text: str
    """The Jinja chat template, as tokenizer.chat_template takes it."""
    source: str
    """Where it came from, in words: shown in the run's events."""


class TemplateError(ValueError):
    """A chat template that cannot be used; the message says what to choose instead."""


def choose_template(tokenizer, choice: str = "auto") -> ChatTemplate:
    """sft.template: 'auto' (the tokenizer's chat template, else the plain one), 'plain', a
    .jinja file, or a model folder (or cached hub id) whose tokenizer's chat template to use."""
    if choice == "plain" or (choice == "auto" and not _own_template(tokenizer)):
        bos = "{{ bos_token }}" if added_bos_id(tokenizer) is not None else ""
        why = "set in the config" if choice == "plain" else "the tokenizer has no chat template"
        return ChatTemplate(bos + PLAIN_TEMPLATE, f"the plain template ({why})")
    if choice == "auto":
        return ChatTemplate(_own_template(tokenizer), "the tokenizer's chat template")
    path = Path(choice).expanduser()
    if path.is_file():
        return ChatTemplate(path.read_text(encoding="utf-8"), f"the template file {path}")
    from .models import ModelError, load_tokenizer

    try:
        text = _own_template(load_tokenizer(choice))
    except ModelError as exc:
        raise TemplateError(f"sft.template: {exc}; or choose 'auto', 'plain' or a .jinja file") from exc
    if not text:
        raise TemplateError(f"sft.template: the tokenizer of {choice} has no chat template; choose "
                            "another model, a .jinja file, 'auto' or 'plain'")
    return ChatTemplate(text, f"the chat template of {choice}")


def _own_template(tokenizer) -> str:
    """The tokenizer's default chat template, or "" when it has none."""
    try:
        return tokenizer.get_chat_template() or ""
    except ValueError:  # transformers: "Cannot use chat template functions ... no chat template"
        return ""


def generation_prompt(tokenizer, messages: list[dict], template: str | None = None) -> str:
    """The text a model is given to answer `messages` (the last one the user's): rendered with
    `template`, else the tokenizer's chat template (an SFT checkpoint's tokenizer carries the
    run's), and the generation prompt, as training rendered the prompts. Tokenize it with
    add_special_tokens=False: the template writes any BOS itself."""
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=True)


# ------------------------------------------------------------------------ tokens and labels

def response_spans(tokenizer, template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as the template writes it, and the character span [start, end) of each
    assistant message in it (see the module docstring); TemplateError when the template writes
    a conversation's start differently once more messages follow."""
    def render(part: list[dict], prompt: bool) -> str:
        return tokenizer.apply_chat_template(part, chat_template=template, tokenize=False,
                                             add_generation_prompt=prompt)

    full, spans = render(messages, False), []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:i], True), render(messages[:i + 1], False)
        if not (through.startswith(before) and full.startswith(through)):
            raise TemplateError(
                "the chat template writes the start of a conversation differently when more "
                "messages follow, so the responses cannot be told from the prompts; choose "
                "another template (sft.template: 'plain', a model folder or a .jinja file)")
        spans.append((len(before), _through_eos(through, len(before), tokenizer.eos_token)))
    return full, spans


def _through_eos(text: str, start: int, eos: str | None) -> int:
    """Where a response that starts at `start` ends for training: after its last end-of-text token
    when the template writes one, so that what the template adds after it (the plain template's
    blank line, a ChatML newline) is not a target: generation stops at that token and never
    writes them. The whole message when there is none."""
    found = text.rfind(eos, start) if eos else -1
    return found + len(eos) if found >= 0 else len(text)


def preview(tokenizer, template: str, messages: list[dict]) -> list[tuple[str, bool]]:
    """The conversation as the model sees it, in pieces of (text, trained): what a preview
    shows, the trained pieces (the responses) marked."""
    text, spans = response_spans(tokenizer, template, messages)
    pieces, at = [], 0
    for start, end in spans:
        pieces += [(text[at:start], False), (text[start:end], True)]
        at = end
    return [(piece, trained) for piece, trained in pieces + [(text[at:], False)] if piece]


def format_preview(pieces: list[tuple[str, bool]]) -> str:
    """A preview as plain text, each trained piece between ⟦ and ⟧."""
    return "".join(f"⟦{piece}⟧" if trained else piece for piece, trained in pieces)


def tokenize_conversation(tokenizer, template: str, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation: labels equal the ids on response tokens and
    are -100 everywhere else."""
    text, spans = response_spans(tokenizer, template, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [token if any(start < end_span and end > start_span for start_span, end_span in spans)
              else IGNORE_INDEX for token, (start, end) in zip(ids, encoded["offset_mapping"], strict=True)]
    return ids, labels


@dataclass
class TokenizedExamples:
    """Examples as token ids and labels, ready to pack; `cut` were longer than a row and cut
    to it, `dropped` had no response token left after the cut (their indices in the input)."""

    ids: list[np.ndarray]
    labels: list[np.ndarray]
    cut: int
    dropped: list[int]
    longest: int = 0
    """Tokens of the longest example before the cut (the row length that would cut none)."""
    longest_origin: str = ""
    """Where that example is: "FILE line N"."""


def tokenize_examples(tokenizer, template: str, examples: list[SftExample], seq_len: int) -> TokenizedExamples:
    ids, labels, cut, dropped, longest, origin = [], [], 0, [], 0, ""
    for index, example in enumerate(examples):
        tokens, targets = tokenize_conversation(tokenizer, template, example.messages)
        if len(tokens) > longest:
            longest, origin = len(tokens), f"{example.file} line {example.line}"
        if len(tokens) > seq_len:
            cut += 1
            tokens, targets = tokens[:seq_len], targets[:seq_len]
        targets[0] = IGNORE_INDEX  # in a packed row, it would be predicted from the example before
        if all(t == IGNORE_INDEX for t in targets):
            dropped.append(index)
            continue
        ids.append(np.asarray(tokens, dtype=np.int64))
        labels.append(np.asarray(targets, dtype=np.int64))
    return TokenizedExamples(ids, labels, cut, dropped, longest, origin)


def row_length_for(longest: int, context: int | None = None) -> int:
    """The batch.seq_len to suggest for examples of up to `longest` tokens: the power of two that
    holds them (rows of a power of two suit the GPU's kernels), the model's `context` at most."""
    fits = 2 ** math.ceil(math.log2(max(longest, 1)))
    return min(fits, context) if context else fits


# ------------------------------------------------------------------------------------ rows

def pack_rows(lengths: list[int], seq_len: int) -> list[list[int]]:
    """The examples (by index, in order) of each row: each row takes examples while they fit."""
    rows, current, used = [], [], 0
    for index, length in enumerate(lengths):
        if current and used + length > seq_len:
            rows.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    return rows + ([current] if current else [])


class PackedExamples(torch.utils.data.Dataset):
    """Rows of `seq_len` tokens, each holding whole examples (input_ids, labels and
    position_ids restarting at every example, as CPT's rows); padding is labelled -100."""

    def __init__(self, examples: TokenizedExamples, seq_len: int, pad_id: int):
        self.examples, self.seq_len, self.pad_id = examples, seq_len, pad_id
        self.rows = pack_rows([len(ids) for ids in examples.ids], seq_len)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of {len(self)}")
        chosen = self.rows[i]
        ids = np.concatenate([self.examples.ids[j] for j in chosen])
        labels = np.concatenate([self.examples.labels[j] for j in chosen])
        positions = np.concatenate([np.arange(len(self.examples.ids[j]), dtype=np.int64) for j in chosen])
        return padded_row(ids, labels, positions, self.seq_len, self.pad_id)

    @property
    def trained_tokens(self) -> int:
        """Response tokens (those with a label) in all rows."""
        return int(sum((labels != IGNORE_INDEX).sum() for labels in self.examples.labels))
