"""Domain tokenizer extension on the tiny model: candidates in the base tokenizer's own form,
new tokens that encoding really uses, embedding and lm_head rows at the mean of their
sub-tokens, LoRA rows that learn, fertility, a run that resumes, and the CLI."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpt_studio.core import tokenizer_ext
from cpt_studio.core.config import CheckpointConfig, MethodConfig, ScheduleConfig, TokenizerConfig
from cpt_studio.core.data import prepare_run_data
from cpt_studio.core.run_folder import RunPaths, list_checkpoints
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import make_documents
from cpt_studio.core.testing.run_helpers import events_of, last_per_step, tiny_run_config
from cpt_studio.core.testing.tiny_model import TRAINING_TEXT, build_tiny_model, train_tiny_tokenizer
from cpt_studio.core.tokenizer_ext import (
    ExtensionTexts,
    extend_tokenizer,
    find_candidates,
    lora_token_rows,
    preview_extension,
    resize_and_init,
)
from cpt_studio.core.training import train

GENERAL = [t for t in TRAINING_TEXT if not re.search("tacrolimus|Bioavailability|Renal", t)]
"""Base tokenizer text without the domain words: it spells 'tacrolimus' letter by letter."""
DOMAIN = make_documents(200, seed=1)
SETTINGS = TokenizerConfig(extend=True, vocab_size=600, min_frequency=5, max_new_tokens=400)


@pytest.fixture(scope="module", params=["byte-level", "metaspace", "llama"])
def base(request):
    return train_tiny_tokenizer(384, GENERAL, style=request.param)


@pytest.fixture(scope="module")
def extension(base):
    candidates, _ = find_candidates(base, DOMAIN, SETTINGS)
    return extend_tokenizer(base, candidates, SETTINGS.max_new_tokens)


def marker(tokenizer) -> str:
    return "Ġ" if "Ġthe" in tokenizer.get_vocab() else "▁"


def test_candidates_are_whole_words_in_the_base_tokenizers_word_initial_form(base):
    candidates, rejected = find_candidates(base, DOMAIN, SETTINGS)
    by_token = {c.token: c for c in candidates}
    tacrolimus = by_token[marker(base) + "tacrolimus"]  # not 'tacrolimus': never looked up after a space
    assert tacrolimus.text == " tacrolimus" and "".join(tacrolimus.base_pieces) == tacrolimus.token
    assert tacrolimus.replaces == len(base.tokenize(" tacrolimus")) >= 3
    if marker(base) == "Ġ":  # every ' tacrolimus' of the text (the first word of a document has no space)
        assert tacrolimus.frequency == sum(len(re.findall(r" tacrolimus\b", d)) for d in DOMAIN)
    vocab = base.get_vocab()
    assert all(c.token not in vocab and c.text.strip().isalpha() for c in candidates)
    assert all(len(c.text.strip()) >= 4 and c.frequency >= 5 for c in candidates)
    saved = [c.tokens_saved for c in candidates]
    assert saved == sorted(saved, reverse=True) and rejected["only inside longer words"] > 0


def test_filters_rule_length_frequency_and_maximum(base):
    rule = TokenizerConfig(vocab_size=600, min_frequency=5, min_length=5, token_pattern="[a-z]{5,7}")
    candidates, rejected = find_candidates(base, DOMAIN, rule)
    assert candidates and all(re.fullmatch("[a-z]{5,7}", c.text.strip()) for c in candidates)
    assert rejected["does not match the token rule"] > 0 and rejected["shorter than 5 characters"] > 0
    frequent = TokenizerConfig(vocab_size=600, min_frequency=280)
    assert all(c.frequency >= 280 for c in find_candidates(base, DOMAIN, frequent)[0])
    limited = extend_tokenizer(base, find_candidates(base, DOMAIN, SETTINGS)[0], max_new_tokens=12)
    assert 0 < len(limited.new_tokens) <= 12 and limited.left_out
    assert len(limited.tokenizer) == len(base) + len(limited.new_tokens)


def test_encoding_running_text_uses_the_new_tokens_and_decodes_back(base, extension, tmp_path):
    tokenizer = extension.tokenizer
    word = marker(base) + "tacrolimus"
    text = "The patient received tacrolimus twice daily, and the tacrolimus trough was measured."
    tokens = tokenizer.tokenize(text)
    assert tokens.count(word) == 2 and len(tokens) < len(base.tokenize(text))
    assert {c.token for c in extension.added} >= {word, marker(base) + "cyclosporine"}
    for sample in [text, "tacrolimuses and Tacrolimus.", "  tacrolimus\n\ttacrolimus!", DOMAIN[0], *GENERAL]:
        decoded = tokenizer.decode(tokenizer.encode(sample, add_special_tokens=False))
        assert decoded == base.decode(base.encode(sample, add_special_tokens=False))
        assert decoded == sample or marker(base) == "▁"  # this tiny metaspace BPE lacks ',' and '\t'
    plain = "A quiet river runs past an old mill."  # text without domain words keeps its base tokens
    assert tokenizer.encode(plain) == base.encode(plain)
    tokenizer.save_pretrained(tmp_path)  # what a checkpoint holds, loaded as anyone would
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.encode(text) == tokenizer.encode(text) and word in reloaded.tokenize(text)


def test_domain_fertility_falls_and_general_fertility_does_not_rise(base):
    texts = ExtensionTexts(DOMAIN[:150], DOMAIN[150:], GENERAL)
    preview = preview_extension(base, texts, SETTINGS)
    domain, general = preview.fertility["domain"], preview.fertility["general"]
    assert domain["after"] < 0.7 * domain["before"]
    assert general["after"] <= general["before"] and preview.general_words_changed < 0.2
    assert "new tokens" in preview.message and preview.to_dict()["added"][0]["base_pieces"]


def test_domain_tokens_are_learned_from_the_training_documents_of_the_runs_own_split(
        tmp_path, tiny_model_dir, tiny_tokenizer):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    texts = tokenizer_ext.texts_for_config(config)
    data = prepare_run_data(config.corpus, config.eval, tiny_tokenizer, tmp_path / "run", seq_len=64,
                            seed=config.seed)
    heldout = [json.loads(line)["text"] for line in data.domain.heldout_path.read_text().splitlines()]
    assert texts.domain_heldout == heldout and len(heldout) == config.eval.heldout_count
    assert len(texts.domain_training) == data.domain.store.n_docs - len(heldout)
    assert not set(texts.domain_training) & set(heldout)
    general = [json.loads(line)["text"] for line in data.general.heldout_path.read_text().splitlines()]
    assert texts.general_heldout == general


def test_a_saved_extension_is_refused_for_another_base_tokenizer(tmp_path, base):
    texts = ExtensionTexts(DOMAIN, DOMAIN[:10], GENERAL)
    folder = tokenizer_ext.save_extension(preview_extension(base, texts, SETTINGS), tmp_path / "tok", base)
    extended, record = tokenizer_ext.load_extension(folder, base)
    assert len(extended) == len(base) + len(record["new_tokens"])
    with pytest.raises(tokenizer_ext.ExtensionError, match="extends another base tokenizer"):
        tokenizer_ext.load_extension(folder, train_tiny_tokenizer(384))


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny_general_model(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("general") / "model"
    return build_tiny_model(folder, tie_word_embeddings=request.param, texts=GENERAL)


def extended_model(folder):
    base = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ext = extend_tokenizer(base, find_candidates(base, DOMAIN, SETTINGS)[0], SETTINGS.max_new_tokens)
    return base, model, ext


def test_new_rows_are_the_mean_of_their_sub_token_rows_in_both_matrices(tiny_general_model):
    base, model, ext = extended_model(tiny_general_model)
    tied = model.config.tie_word_embeddings
    old_embedding = model.get_input_embeddings().weight.detach().clone()
    old_head = model.get_output_embeddings().weight.detach().clone()
    ids = resize_and_init(model, base, ext.tokenizer, ext.new_tokens)

    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert (head is embedding) == tied
    assert embedding.shape[0] % 64 == 0 and embedding.shape[0] >= len(ext.tokenizer) > len(base)
    assert torch.equal(embedding[:len(base)], old_embedding) and torch.equal(head[:len(base)], old_head)
    for token, token_id in zip(ext.new_tokens, ids, strict=True):
        pieces = base.convert_tokens_to_ids([t.value for t in base.backend_tokenizer.model.tokenize(token)])
        assert len(pieces) >= 2
        torch.testing.assert_close(embedding[token_id], old_embedding[pieces].mean(0))
        torch.testing.assert_close(head[token_id], old_head[pieces].mean(0))
    padding = list(range(len(ext.tokenizer), embedding.shape[0]))
    assert padding and not embedding[padding].any() and not head[padding].any()
    assert set(padding) <= set(model.generation_config.suppress_tokens)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_new_tokens_logit_is_not_zero_and_a_few_steps_make_the_model_produce_it(tiny_general_model, method):
    base, model, ext = extended_model(tiny_general_model)
    ids = resize_and_init(model, base, ext.tokenizer, ext.new_tokens)
    tokenizer, new_id = ext.tokenizer, ext.tokenizer.convert_tokens_to_ids("Ġtacrolimus")
    prompt = tokenizer("The patient received", return_tensors="pt").input_ids
    with torch.no_grad():
        assert model(prompt).logits[0, -1, new_id] != 0
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 trainable_token_indices=lora_token_rows(model, ids)))
    batch = tokenizer(["The patient received tacrolimus twice daily."] * 4, return_tensors="pt").input_ids
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    for _ in range(25):
        model(batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        assert model(prompt).logits[0, -1].argmax() == new_id


@pytest.fixture(scope="module")
def untied_general_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("untied") / "model", tie_word_embeddings=False, texts=GENERAL)


def test_a_run_with_extension_resumes_and_its_checkpoint_loads_in_plain_transformers(
        tmp_path, untied_general_model, monkeypatch):
    config = tiny_run_config(untied_general_model, tmp_path / "data", tokenizer=SETTINGS,
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=6, warmup_ratio=0),
                             checkpoints=CheckpointConfig(interval=3, keep=3))
    config.eval.interval = 3
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    [extended] = [e for e in events_of(run_dir, "status") if e["phase"] == "tokenizer" and "new_tokens" in e]
    assert extended["new_tokens"] > 0 and extended["fertility"]["domain"]["after"] < extended["fertility"]["domain"]["before"]
    saved = AutoTokenizer.from_pretrained(RunPaths(run_dir).tokenizer)
    new_id = saved.convert_tokens_to_ids("Ġtacrolimus")
    heldout = [json.loads(line) for line in (run_dir / "heldout" / "domain.jsonl").read_text().splitlines()]
    assert any(new_id in doc["ids"] for doc in heldout)  # evaluation reads the extended tokens
    first = last_per_step(events_of(run_dir, "step"))

    checkpoint = RunPaths(run_dir).checkpoints / "checkpoint-6"
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer("The patient received tacrolimus.", return_tensors="pt").input_ids
    assert new_id in ids[0].tolist() and len(tokenizer) == len(saved) > new_id
    assert model.get_output_embeddings().weight.shape[0] == model.config.vocab_size >= len(tokenizer)
    assert torch.isfinite(model(ids).logits).all()

    shutil.rmtree(checkpoint)  # as if it had stopped after step 3; the extension must not be re-derived
    monkeypatch.setattr(tokenizer_ext, "find_candidates", lambda *a, **k: pytest.fail("re-derived"))
    assert train(run_dir, resume=True) == "finished"
    again = last_per_step(events_of(run_dir, "step"))
    assert [again[s]["loss"] for s in (4, 5, 6)] == pytest.approx([first[s]["loss"] for s in (4, 5, 6)], rel=1e-5)
    assert AutoTokenizer.from_pretrained(checkpoint).get_vocab() == saved.get_vocab()


def test_lora_run_trains_and_saves_the_new_rows(tmp_path, untied_general_model):
    config = tiny_run_config(untied_general_model, tmp_path / "data", tokenizer=SETTINGS,
                             method=MethodConfig(kind="lora", lora_rank=4, lora_alpha=8),
                             schedule=ScheduleConfig(peak_lr=1e-2, max_steps=3, warmup_ratio=0),
                             checkpoints=CheckpointConfig(interval=3, keep=1))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"
    [last] = list_checkpoints(run_dir)
    rows = json.loads((last / "adapter_config.json").read_text())["trainable_token_indices"]
    new_id = AutoTokenizer.from_pretrained(last).convert_tokens_to_ids("Ġtacrolimus")
    assert set(rows) == {"embed_tokens", "lm_head"} and rows["embed_tokens"] == rows["lm_head"]
    assert new_id in rows["embed_tokens"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", "tokenizer", "extend", *args],
                          capture_output=True, text=True)


def test_cli_previews_without_changing_anything_and_applies_into_a_run(tmp_path, untied_general_model):
    config = tiny_run_config(untied_general_model, tmp_path / "data")
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    run_dir = create_run(config, tmp_path / "runs")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    preview = cli(str(config_file), "--vocab-size", "600", "--min-frequency", "5", "--json")
    assert preview.returncode == 0, preview.stderr
    figures = json.loads(preview.stdout)
    assert figures["added"][0]["frequency"] >= 5 and "Ġtacrolimus" in {c["token"] for c in figures["added"]}
    assert figures["fertility"]["domain"]["after"] < figures["fertility"]["domain"]["before"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    applied = cli(str(run_dir), "--vocab-size", "600", "--min-frequency", "5", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "' tacrolimus'" in applied.stdout and f"applied into {run_dir}" in applied.stdout
    record = json.loads((RunPaths(run_dir).tokenizer_record).read_text())
    assert record["new_tokens"] == figures["new_tokens"]
    settings = json.loads(RunPaths(run_dir).config.read_text())["tokenizer"]
    assert settings["extend"] and settings["min_frequency"] == 5
    refused = cli(str(run_dir), "--pattern", "[a-z")
    assert refused.returncode == 2 and "not a valid regular expression" in refused.stderr


def test_a_tokenizer_that_cannot_be_extended_is_refused_with_the_reason():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece({"[UNK]": 0, "the": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(tokenizer_ext.ExtensionError, match="needs a BPE tokenizer; this one is WordPiece"):
        find_candidates(wordpiece, DOMAIN, SETTINGS)
