"""`cpt-studio corpus inspect` through the real command."""

import json
import subprocess
import sys

from cpt_studio.core.testing.corpus_files import make_documents, write_jsonl


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cpt_studio.core.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_inspect_prints_counts_and_preview(tmp_path, tiny_model_dir):
    texts = make_documents(25, seed=9)
    path = write_jsonl(tmp_path / "domain.jsonl", texts)
    result = cli("corpus", "inspect", str(path), "--tokenizer", str(tiny_model_dir), "--json", "--preview", "2")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["documents"] == 25 and figures["words"] == sum(len(t.split()) for t in texts)
    assert [p["text"] for p in figures["preview"]] == texts[:2]


def test_inspect_lists_every_bad_record_and_exits_2(tmp_path, tiny_model_dir):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "x"}\n{oops\n')
    result = cli("corpus", "inspect", str(path), "--tokenizer", str(tiny_model_dir))
    assert result.returncode == 2
    assert "bad.jsonl line 2: no field 'text'" in result.stderr and "bad.jsonl line 3: invalid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    skipped = cli("corpus", "inspect", str(path), "--tokenizer", str(tiny_model_dir), "--skip-bad")
    assert skipped.returncode == 0 and "skipped     2 bad record(s)" in skipped.stdout
