"""Instruction data (cpt_studio.core.sft_data): records checked with file and line, the
template, response-only labels for both formats with and without a chat template, and packed
rows whose examples do not see each other."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from cpt_studio.core.config import SftConfig
from cpt_studio.core.packing import IGNORE_INDEX
from cpt_studio.core.sft_data import (
    PackedExamples,
    SftDataError,
    TemplateError,
    choose_template,
    format_preview,
    generation_prompt,
    preview,
    read_examples,
    response_spans,
    skipped_records,
    tokenize_conversation,
    tokenize_examples,
)
from cpt_studio.core.testing.tiny_model import special_tokens_variant

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
          "+ '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
"""A tiny ChatML template, the one SmolLM2-Instruct and Qwen write."""

QUESTION, ANSWER, SYSTEM = "What is tacrolimus?", "A calcineurin inhibitor.", "Answer briefly."


def _write(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                    encoding="utf-8")
    return str(path)


@pytest.fixture
def chat_tokenizer():
    """The tiny tokenizer with ChatML's special tokens and chat template."""
    tokenizer = special_tokens_variant("instruct")
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture
def base_tokenizer(tiny_tokenizer):
    assert not choose_template(tiny_tokenizer).text.startswith("{% for")  # it has no template
    return tiny_tokenizer


FORMATS = {
    "instruction": ({"question": QUESTION, "answer": ANSWER, "system_prompt": SYSTEM},
                    SftConfig(instruction_field="question", response_field="answer",
                              system_field="system_prompt")),
    "chat": ({"conversation": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION},
                               {"role": "assistant", "content": ANSWER}]},
             SftConfig(format="chat", messages_field="conversation")),
}
TEMPLATES = {"chat template": ("chat_tokenizer", f"{ANSWER}<|im_end|>"),
             "plain template": ("base_tokenizer", f"{ANSWER}<|endoftext|>")}
"""What is trained: the response through its end-of-text token, not the newline(s) the template
writes after it (generation stops at that token; TRL's assistant masks end there too)."""


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_only_the_response_carries_labels(fmt, template, request, tmp_path):
    record, settings = FORMATS[fmt]
    settings.data = [_write(tmp_path / "sft.jsonl", [record])]
    fixture, trained = TEMPLATES[template]
    tokenizer = request.getfixturevalue(fixture)
    [example] = read_examples(settings)
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant"]
    chosen = choose_template(tokenizer)
    ids, labels = tokenize_conversation(tokenizer, chosen.text, example.messages)
    text, spans = response_spans(tokenizer, chosen.text, example.messages)
    prompt_end = spans[0][0]
    assert ANSWER not in text[:prompt_end] and SYSTEM in text[:prompt_end] and QUESTION in text[:prompt_end]
    labelled = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    assert all(label in (IGNORE_INDEX, t) for t, label in zip(ids, labels, strict=True))
    assert tokenizer.decode(labelled) == trained  # the response and its end of turn, nothing after
    prompt = [t for t, label in zip(ids, labels, strict=True) if label == IGNORE_INDEX]
    after = text[spans[0][1]:]  # what the template writes after the end-of-text token
    assert tokenizer.decode(prompt) == text[:prompt_end] + after and after.strip() == ""


def test_an_input_follows_the_instruction_and_a_template_choice_is_honoured(tmp_path, base_tokenizer, tiny_model_dir):
    settings = SftConfig(data=[_write(tmp_path / "sft.jsonl", [{"instruction": "Translate.",
                                                                  "input": "Bonjour", "response": "Hello"}])])
    [example] = read_examples(settings)
    assert example.messages == [{"role": "user", "content": "Translate.\n\nBonjour"},
                                {"role": "assistant", "content": "Hello"}]
    assert "plain" in choose_template(base_tokenizer, "plain").source
    jinja = tmp_path / "t.jinja"
    jinja.write_text(CHATML)
    assert choose_template(base_tokenizer, str(jinja)).text == CHATML
    with pytest.raises(TemplateError, match="has no chat template"):
        choose_template(base_tokenizer, str(tiny_model_dir))
    bos = special_tokens_variant("bos")  # a tokenizer that adds <s> gets it from the plain template
    text = generation_prompt_with(bos, choose_template(bos).text)
    assert text.startswith("<s>### Instruction:\nHi\n\n### Response:\n")


def generation_prompt_with(tokenizer, template: str) -> str:
    tokenizer.chat_template = template
    return generation_prompt(tokenizer, [{"role": "user", "content": "Hi"}])


def test_a_template_that_rewrites_the_prompt_is_refused(chat_tokenizer):
    """Some templates write earlier turns differently once more follow: the spans would lie."""
    moving = CHATML.replace("{% for message in messages %}", "{{ messages | length }}{% for message in messages %}")
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    with pytest.raises(TemplateError, match="writes the start of a conversation differently"):
        response_spans(chat_tokenizer, moving, messages)


def test_bad_records_are_named_by_file_and_line_with_the_fix(tmp_path):
    path = _write(tmp_path / "bad.jsonl", [
        {"instruction": QUESTION, "response": ANSWER},                       # 1 good
        '{"instruction": "unterminated',                                    # 2 invalid JSON
        {"question": QUESTION, "answer": ANSWER},                           # 3 other field names
        {"instruction": QUESTION},                                          # 4 no response
        {"instruction": QUESTION, "response": "  "},                        # 5 empty response
        {"messages": [{"role": "user", "content": QUESTION}]},              # 6 ends with the user
        {"messages": [{"role": "robot", "content": "beep"}]},               # 7 unknown role
        '["a", "list"]',                                                    # 8 not an object
        {"instruction": QUESTION, "response": 3},                           # 9 not text
    ])
    with pytest.raises(SftDataError) as caught:
        read_examples(SftConfig(data=[path]))
    problems = {p.line: str(p) for p in caught.value.problems}
    assert sorted(problems) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert all(text.startswith(f"{path} line {line}: ") for line, text in problems.items())
    assert "invalid JSON" in problems[2]
    assert "(fields: answer, question)" in problems[3] and "--instruction-field" in problems[3]
    assert "no field 'response'" in problems[4] and "--response-field" in problems[4]
    assert "field 'response' is empty" in problems[5]
    assert "must end with the assistant's response" in problems[6]
    assert "[0]'s role is \"robot\"; a role is one of system, user, assistant" in problems[7]
    assert "not an object" in problems[8] and "is int, not text" in problems[9]
    assert "8 problem(s) in the instruction data" in str(caught.value)
    skipping = SftConfig(data=[path], skip_bad=True)  # sft.skip_bad: the good one trains, the 8 are named
    assert [e.line for e in read_examples(skipping)] == [1]
    assert sorted(p.line for p in skipped_records(skipping)) == [2, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(SftDataError, match="does not exist"):  # a missing file is not a bad record
        read_examples(SftConfig(data=[path, str(tmp_path / "missing.jsonl")], skip_bad=True))
    with pytest.raises(SftDataError, match="does not exist"):
        read_examples(SftConfig(data=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(SftDataError, match="neither a JSON lines file"):
        read_examples(SftConfig(data=[_write(tmp_path / "notes.txt", ["hello"])]))
    with pytest.raises(SftDataError, match="is a folder; give the instruction data files in it"):
        read_examples(SftConfig(data=[str(tmp_path)]))


def test_packed_examples_do_not_attend_to_each_other(tiny_model_dir, base_tokenizer):
    """What the restarting position ids are for, as for CPT's rows: the logits of every example
    in a packed row equal its logits alone; padding and prompts carry no label."""
    from cpt_studio.core.sft_data import SftExample

    template = choose_template(base_tokenizer).text
    examples = [SftExample([{"role": "user", "content": q}, {"role": "assistant", "content": a}], "x", i)
                for i, (q, a) in enumerate([(QUESTION, ANSWER), ("Dose?", "Twice daily."),
                                            ("Clearance?", "Renal clearance falls with age.")])]
    tokenized = tokenize_examples(base_tokenizer, template, examples, seq_len=256)
    rows = PackedExamples(tokenized, 256, base_tokenizer.pad_token_id)
    assert len(rows) == 1
    row = rows[0]
    lengths = [len(ids) for ids in tokenized.ids]
    starts = [sum(lengths[:i]) for i in range(3)]
    assert torch.equal(torch.nonzero(row["position_ids"][:sum(lengths)] == 0).flatten(), torch.tensor(starts))
    assert (row["labels"][sum(lengths):] == IGNORE_INDEX).all() and (row["labels"][starts] == IGNORE_INDEX).all()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        packed = model(input_ids=row["input_ids"][None], position_ids=row["position_ids"][None],
                       use_cache=False).logits[0]
        for start, ids in zip(starts, tokenized.ids, strict=True):
            alone = model(input_ids=torch.from_numpy(ids)[None], use_cache=False).logits[0]
            assert torch.allclose(packed[start:start + len(ids)], alone, atol=1e-5)
    assert rows.trained_tokens == sum(int((labels != IGNORE_INDEX).sum()) for labels in tokenized.labels)


def test_a_long_example_is_cut_to_the_row_and_one_without_response_left_is_dropped(base_tokenizer):
    from cpt_studio.core.sft_data import SftExample

    template = choose_template(base_tokenizer).text
    long_answer = SftExample([{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "the weather today " * 40}], "x", 1)
    long_prompt = SftExample([{"role": "user", "content": "the weather today " * 40},
                              {"role": "assistant", "content": "Yes."}], "x", 2)
    tokenized = tokenize_examples(base_tokenizer, template, [long_answer, long_prompt], seq_len=64)
    assert tokenized.cut == 2 and tokenized.dropped == [1]
    assert [len(ids) for ids in tokenized.ids] == [64]


def test_a_preview_shows_the_rendered_example_with_the_trained_part_marked(chat_tokenizer):
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    shown = format_preview(preview(chat_tokenizer, CHATML, messages))
    assert shown == f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n⟦{ANSWER}<|im_end|>⟧\n"


def test_a_response_field_of_another_name_is_told_which_field_to_use(tmp_path):
    """instruction/answer records (Alpaca's instruction/input/output reads as it is): the error
    names the likely field and the setting."""
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"instruction": "Name a drug.", "input": "", "answer": "Tacrolimus."}) + "\n")
    with pytest.raises(SftDataError) as error:
        read_examples(SftConfig(data=[str(path)]))
    assert "set the response field (sft.response_field, --response-field) to 'answer' (it looks like the response)" in str(error.value)
    assert read_examples(SftConfig(data=[str(path)], response_field="answer"))[0].messages[-1]["content"] == "Tacrolimus."


ALPACA = [{"instruction": "Name a calcineurin inhibitor.", "input": "", "output": "Tacrolimus."},
          {"instruction": "Spell the drug.", "input": "tacrolimus", "output": "T-A-C-R-O-L-I-M-U-S."}]


def test_the_common_instruction_files_read_as_they_come(tmp_path):
    """Alpaca's data is one JSON array (alpaca_data.json, indented), ShareGPT's conversations are
    {"from": "human"/"gpt", "value"}: both were refused (by the file name, by the role)."""
    alpaca = tmp_path / "alpaca_data.json"
    alpaca.write_text(json.dumps(ALPACA, indent=4), encoding="utf-8")
    examples = read_examples(SftConfig(data=[str(alpaca)]))  # no --response-field output needed
    assert [(e.line, e.messages[-1]["content"]) for e in examples] == [(2, "Tacrolimus."), (7, "T-A-C-R-O-L-I-M-U-S.")]
    assert examples[1].messages[0]["content"] == "Spell the drug.\n\ntacrolimus"  # the input follows
    sharegpt = _write(tmp_path / "sharegpt.jsonl", [{"conversations": [
        {"from": "system", "value": SYSTEM}, {"from": "human", "value": QUESTION}, {"from": "gpt", "value": ANSWER}]}])
    [example] = read_examples(SftConfig(data=[sharegpt]))  # nor --messages-field conversations
    assert example.messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION},
                                {"role": "assistant", "content": ANSWER}]
    with pytest.raises(SftDataError, match="no field 'answer'"):  # a field named by the user is that field
        read_examples(SftConfig(data=[str(alpaca)], response_field="answer"))


def test_json_shaped_instruction_files_are_told_what_they_are(tmp_path):
    """An indented JSON array named .jsonl gave an 'invalid JSON' per line (hundreds); one on a
    single line 'not an object'; a bad record in a .json array is named by its line."""
    indented = tmp_path / "alpaca.jsonl"
    indented.write_text(json.dumps(ALPACA, indent=2), encoding="utf-8")
    with pytest.raises(SftDataError) as caught:
        read_examples(SftConfig(data=[str(indented)]))
    [problem] = caught.value.problems
    assert problem.line is None and "one JSON document over many lines" in problem.message and "name it .json" in problem.message
    one_line = tmp_path / "one-line.jsonl"
    one_line.write_text(json.dumps(ALPACA) + "\n", encoding="utf-8")
    with pytest.raises(SftDataError, match="the file is one JSON array: name it .json"):
        read_examples(SftConfig(data=[str(one_line)], response_field="output"))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": 3},\n'
                      '  {"instruction": "d" "output": "e"}\n]', encoding="utf-8")
    with pytest.raises(SftDataError) as caught:
        read_examples(SftConfig(data=[str(broken)], response_field="output"))
    assert [(p.line, p.message.split(" (")[0]) for p in caught.value.problems] == [
        (3, "field 'output' is int, not text"), (4, "invalid JSON")]
    not_array = tmp_path / "one.json"
    not_array.write_text(json.dumps(ALPACA[0]), encoding="utf-8")
    with pytest.raises(SftDataError, match="is not a JSON array of records"):
        read_examples(SftConfig(data=[str(not_array)], response_field="output"))


def test_too_few_instruction_examples_to_hold_some_out_names_the_setting():
    from cpt_studio.core.config import EvalConfig
    from cpt_studio.core.data import heldout_ids

    with pytest.raises(ValueError) as caught:
        heldout_ids("sft", 3, EvalConfig(heldout_count=8), seed=0)
    assert str(caught.value) == ("instruction data: cannot hold out 8 of 3 instruction examples: at least one "
                                 "must be left for training; lower eval.heldout_count (8) or add instruction examples")
    with pytest.raises(ValueError, match=r"^instruction data: 1 instruction example; at least 2 are needed \(one "
                       r"held out to evaluate, one to train on\): add instruction examples$"):
        heldout_ids("sft", 1, EvalConfig(), seed=0)  # it said to lower eval.heldout_fraction: no help


def test_the_preflight_names_the_records_skip_bad_leaves_out(tmp_path):
    from cpt_studio.core.config import RunConfig
    from cpt_studio.core.preflight import sft_skipped_warnings

    path = _write(tmp_path / "qa.jsonl", [{"instruction": QUESTION, "response": ANSWER}, '{"broken'])
    config = RunConfig(stage="sft", sft=SftConfig(data=[path], skip_bad=True))
    [warning] = sft_skipped_warnings(config)
    assert warning.startswith(f"sft.skip_bad: 1 bad record will be left out ({path} line 2: invalid JSON")
    config.sft.skip_bad = False
    assert sft_skipped_warnings(config) == []
