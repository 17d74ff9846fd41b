"""Setups as files and runs cloned into new ones (cpt_studio.core.runs): the file a setup is
saved to, the command that runs it, and a run's settings under a fresh name, from a config
written by this version or an older one."""

import json
import shlex

import pytest

from cpt_studio.core.config import ConfigError, RunConfig
from cpt_studio.core.run_folder import RunPaths
from cpt_studio.core.runs import (
    clone_config,
    create_run,
    file_name,
    fresh_name,
    save_setup,
    setup_holds,
    setups_dir,
    train_command,
)
from cpt_studio.core.testing.run_helpers import tiny_run_config


@pytest.mark.parametrize("name, taken, fresh", [
    ("pharma", [], "pharma (2)"),
    ("pharma", ["pharma (2)", "pharma (3)"], "pharma (4)"),
    ("pharma (2)", ["pharma", "pharma (2)"], "pharma (3)"),  # the number it had is replaced
    ("run (10)", ["run (2)"], "run (3)"),
    ("  ", [], "run (2)"),
])
def test_a_fresh_name_is_numbered_and_free(name, taken, fresh):
    assert fresh_name(name, taken) == fresh


def test_a_setup_is_saved_in_setups_under_its_name_and_never_over_another(tmp_path):
    config = RunConfig(name="pharma (2)")
    first = save_setup(config)
    assert first == setups_dir() / "pharma-2.json" and RunConfig.load(first) == config
    assert save_setup(config) == first  # the same setup: its own file again
    config.schedule.peak_lr = 4e-5
    second = save_setup(config)
    assert second.name == "pharma-2-2.json" and RunConfig.load(first).schedule.peak_lr == 2e-5
    assert setup_holds(second, config) and not setup_holds(first, config)
    assert save_setup(config, tmp_path / "mine.json") == tmp_path / "mine.json"
    assert file_name("../a b/c") == "..-a-b-c" and file_name("***") == "run"


def test_the_command_survives_a_shell_with_spaces_and_quotes_in_the_path(tmp_path):
    setup = tmp_path / "my data's folder" / "a setup.json"
    command = train_command(setup)
    assert shlex.split(command) == ["cpt-studio", "train", str(setup.resolve())]
    # cmd.exe and PowerShell do not undo POSIX quoting: on Windows the C runtime's rules
    assert train_command(setup, windows=True) == f'cpt-studio train "{setup.resolve()}"'


def test_a_run_is_cloned_with_its_settings_under_a_fresh_name(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    config.method.kind, config.method.lora_rank = "lora", 8
    run_dir = create_run(config, tmp_path / "runs")
    clone = clone_config(run_dir, taken=["tiny", "tiny (2)"])
    assert clone.name == "tiny (3)"
    clone.name = config.name
    assert clone.to_dict() == config.to_dict()
    assert clone_config(run_dir, name="renamed in the history").name == "renamed in the history (2)"


def test_a_config_written_by_an_older_version_is_cloned_with_defaults_for_what_it_lacks(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data")
    run_dir = create_run(config, tmp_path / "runs")
    old = json.loads(RunPaths(run_dir).config.read_text())
    for section, keys in {"eval": ["sets", "guard_set"], "guard": ["spike_factor", "spike_window"],
                          "corpus": ["separator"], "model": ["allow_pickle"], "method": ["lora_dropout"]}.items():
        for key in keys:
            del old[section][key]
    del old["benchmarks"]
    old["corpus"]["domain"] = [spec["path"] for spec in old["corpus"]["domain"]]  # sources as plain paths
    RunPaths(run_dir).config.write_text(json.dumps(old))
    clone = clone_config(run_dir)
    clone.name = config.name
    assert clone.to_dict() == config.to_dict()


def test_a_run_whose_config_cannot_be_read_says_why_with_the_file(tmp_path):
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    RunPaths(run_dir).config.write_text('{"schedule": {"peak": 1}}')
    with pytest.raises(ConfigError) as caught:
        clone_config(run_dir)
    assert caught.value.problems[0].startswith(f"{RunPaths(run_dir).config}: schedule.peak: unknown setting")
