"""The forgetting guard: its decisions as pure functions, the replay remedy in the mixer, and
real rollbacks on the tiny model (forgetting at a high LR, an injected NaN, a loss spike)."""

import math

import pytest

from cpt_studio.core import store
from cpt_studio.core.config import CheckpointConfig, EvalConfig, GuardConfig, ScheduleConfig
from cpt_studio.core.events import read_events
from cpt_studio.core.guard import (
    GuardState,
    Trigger,
    decide,
    forgetting_trigger,
    loss_trigger,
    rollback_target,
)
from cpt_studio.core.mixing import ReplayMixer
from cpt_studio.core.run_folder import RunPaths, list_checkpoints
from cpt_studio.core.runs import create_run
from cpt_studio.core.testing.corpus_files import write_distant_corpus
from cpt_studio.core.testing.run_helpers import events_of, history, timeline_of, tiny_run_config
from cpt_studio.core.training import CPTTrainer, rotate_checkpoints, train

# -- decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize("forgetting, reason", [
    (None, None), (0.10, None), (0.15, None), (0.151, "forgetting"),
    (math.inf, "non-finite evaluation"), (math.nan, "non-finite evaluation"),
])
def test_forgetting_trigger(forgetting, reason):
    trigger = forgetting_trigger(forgetting, threshold=0.15)
    assert (trigger and trigger.reason) == reason
    if trigger:
        assert trigger.numbers["forgetting"] is forgetting and trigger.numbers["threshold"] == 0.15


def test_loss_trigger_nan_and_spikes():
    history = [4.0, 3.8, 3.6, 3.4, 3.2]
    assert loss_trigger(math.nan, [], 3.0, 20).reason == "non-finite loss"
    assert loss_trigger(math.inf, history, 0, 20).reason == "non-finite loss"
    spike = loss_trigger(11.0, history, 3.0, 20)
    assert spike.reason == "loss spike" and spike.numbers["running_mean"] == pytest.approx(3.6)
    assert loss_trigger(10.0, history, 3.0, 20) is None  # 2.8x the mean
    assert loss_trigger(11.0, history[:4], 3.0, 20) is None  # too little history yet
    assert loss_trigger(11.0, history, 0, 20) is None  # spike check off
    assert loss_trigger(11.0, [100.0] * 10 + history, 3.0, 5) is not None  # only the window counts
    assert loss_trigger(11.0, history + [math.nan], 3.0, 20).reason == "loss spike"


def test_rollback_target_is_the_last_checkpoint_under_the_threshold():
    checkpoints = {0: 0.0, 10: 0.05, 20: 0.12, 30: None, 40: 0.2}
    assert rollback_target(checkpoints, before=50, threshold=0.15) == 20
    assert rollback_target(checkpoints, before=20, threshold=0.15) == 10
    assert rollback_target(checkpoints, before=50, threshold=0.04) == 0
    assert rollback_target({10: 0.3}, before=50, threshold=0.15) is None
    assert rollback_target({10: None, 20: None}, before=50, threshold=0.15, watch_forgetting=False) == 20


SETTINGS = GuardConfig(threshold=0.15, max_rollbacks=3)
FORGOT = Trigger("forgetting", "forgetting 20.0% passed the threshold 15%", {"forgetting": 0.2})


def _decide(state=None, settings=SETTINGS, checkpoints=None, base_replay=0.05):
    return decide(FORGOT, state or GuardState(), settings, checkpoints or {0: 0.0, 10: 0.05}, 20,
                  base_replay=base_replay, peak_lr=2e-5)


def test_a_rollback_halves_the_lr_and_remedies_accumulate():
    first = _decide()
    assert (first.action, first.rolled_back_to, first.state.rollbacks) == ("rollback", 10, 1)
    assert first.state.lr_scale == 0.5 and first.state.replay_changes == []
    assert first.remedy == "learning rate x0.5 (peak 2e-05 -> 1e-05)"
    second = _decide(first.state)
    assert second.state.lr_scale == 0.25 and second.state.rollbacks == 2
    fields = second.event_fields(0.15, 0.05)
    assert fields["action"] == "rollback" and fields["rolled_back_to"] == 10
    assert fields["reason"] == "forgetting" and fields["message"] == second.message
    assert fields["reason"] == second.state.decisions[-1]["reason"]  # the event names what guard.json names
    assert fields["forgetting"] == 0.2 and fields["threshold"] == 0.15 and fields["remedy"] == second.remedy
    assert [d["action"] for d in second.state.decisions] == ["rollback", "rollback"]


def test_the_replay_remedy_raises_the_ratio_from_the_rollback_step():
    settings = GuardConfig(remedy="both")
    first = _decide(settings=settings)
    assert first.state.replay_changes == [[10, 0.1]] and first.state.lr_scale == 0.5
    assert "replay ratio 5% -> 10%" in first.remedy
    # a later rollback to an earlier checkpoint replaces the changes after it
    again = decide(FORGOT, first.state, settings, {0: 0.0}, 8, base_replay=0.05, peak_lr=2e-5)
    assert again.rolled_back_to == 0 and again.state.replay_changes == [[0, 0.15]]
    assert again.state.replay_ratio(0.05) == 0.15
    # at the ceiling the learning rate is halved instead
    full = GuardState(replay_changes=[[0, 0.5]])
    capped = _decide(full, settings=GuardConfig(remedy="replay"))
    assert capped.state.replay_changes == [[0, 0.5]] and capped.state.lr_scale == 0.5
    assert "already 50%" in capped.remedy


def test_the_guard_stops_when_rollbacks_are_used_up_or_nothing_is_left():
    used_up = _decide(GuardState(rollbacks=3))
    assert used_up.action == "stop" and used_up.rolled_back_to is None
    assert "after 3 rollback(s), the most allowed" in used_up.message
    assert "checkpoint-10 is the last one under the threshold" in used_up.message
    nowhere = _decide(checkpoints={10: 0.4})
    assert nowhere.action == "stop" and "no checkpoint under the threshold" in nowhere.message


def test_guard_state_round_trips(tmp_path):
    assert GuardState.load(tmp_path) == GuardState()
    state = _decide(settings=GuardConfig(remedy="both")).state
    state.save(tmp_path)
    assert GuardState.load(tmp_path) == state


@pytest.mark.parametrize("changes, problem", [
    ({"threshold": 0}, "threshold 0 must be above 0"),
    ({"remedy": "pray"}, "remedy 'pray' is unknown"),
    ({"max_rollbacks": -1}, "cannot be negative"),
    ({"spike_factor": 0.5}, "spike factor 0.5 must be above 1"),
])
def test_guard_settings_are_validated(changes, problem):
    assert any(problem in p for p in GuardConfig(**changes).validate())


def test_the_replay_remedy_needs_a_general_corpus(tmp_path, tiny_model_dir):
    config = tiny_run_config(tiny_model_dir, tmp_path / "data", guard=GuardConfig(remedy="replay"))
    assert config.validate() == []
    config.corpus.general, config.corpus.replay_ratio = [], 0.0
    assert any("remedy 'replay' raises the replay ratio" in p for p in config.validate())
    assert any("watches only the loss" in w for w in config.warnings())


# -- the replay remedy in the mixer --------------------------------------------------------

def test_a_replay_change_keeps_earlier_steps_and_is_exact_after():
    plain = ReplayMixer(500, 200, 0.05, 20, seed=3)
    changed = ReplayMixer(500, 200, 0.05, 20, seed=3, replay_changes=[(7, 0.15)])
    assert [changed.step(k) for k in range(7)] == [plain.step(k) for k in range(7)]
    general = [sum(i >= 500 for i in changed.step(k)) for k in range(7, 27)]
    assert general == [3] * 20  # 15% of 20 in every step after the change
    assert changed.general_before(27) == 7 * 1 + 20 * 3


# -- rotation and the timeline -------------------------------------------------------------

def test_rotation_keeps_the_protected_checkpoints(tmp_path):
    for step in (0, 5, 10, 15, 20):
        (RunPaths(tmp_path).checkpoints / f"checkpoint-{step}").mkdir(parents=True)
    deleted = rotate_checkpoints(tmp_path, keep=2, protected={5, None})
    assert sorted(p.name for p in deleted) == ["checkpoint-0", "checkpoint-10"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-15", "checkpoint-20"]


def test_a_run_protects_its_best_recommended_and_rollback_checkpoints(tmp_path, tiny_model_dir):
    from types import SimpleNamespace

    from cpt_studio.core.events import EventWriter
    from cpt_studio.core.recipe import Hardware
    from cpt_studio.core.training import RunMonitor

    config = tiny_run_config(tiny_model_dir, tmp_path / "data", guard=GuardConfig(threshold=0.15),
                             checkpoints=CheckpointConfig(interval=10, keep=1, recommend_max_forgetting=0.03))
    paths = RunPaths(tmp_path / "run")
    sets = {name: SimpleNamespace(kind=name) for name in ("domain", "general")}  # EvalSet's kind
    monitor = RunMonitor(config, EventWriter(paths.events), paths, sets,
                         ReplayMixer(10, 10, 0.05, 4), Hardware("cpu", "fp32", "sdpa", False), 40)
    numbers = {0: (0.0, 0.0), 10: (0.10, 0.01), 20: (0.20, 0.10), 30: (0.25, 0.20), 40: (0.05, 0.30)}
    for step, (gain, forgetting) in numbers.items():
        (paths.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        monitor.evals[step] = {"domain_ppl": 40 * (1 - gain), "domain_gain": gain, "forgetting": forgetting}
    # best (lowest domain perplexity) 30, recommended (most gain within 3%) 10, last under 15%: 20
    assert monitor.protected_steps() == {30, 10, 20}
    rotate_checkpoints(paths.root, 1, monitor.protected_steps())
    assert [p.name for p in list_checkpoints(paths.root)] == [
        "checkpoint-10", "checkpoint-20", "checkpoint-30", "checkpoint-40"]


def test_the_timeline_keeps_guard_events_across_the_rollback():
    events = [{"type": "step", "step": s} for s in range(1, 11)]
    events += [{"type": "guard", "step": 10, "action": "rollback"},
               {"type": "status", "step": 5, "resumed_from": 5}]
    events += [{"type": "step", "step": s, "again": True} for s in range(6, 9)]
    kept = timeline_of(events)
    assert [e["step"] for e in kept if e["type"] == "step"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(e.get("again") for e in kept if e["type"] == "step" and e["step"] > 5)
    assert [e["step"] for e in kept if e["type"] == "guard"] == [10]


# -- real rollbacks on the tiny model ------------------------------------------------------

def _distant_corpus(config, folder):
    """Domain and general text with no word in common: training on the domain alone at LR
    5e-3 makes general text much harder (forgetting -15% at step 5, +5% at 10, +30% at 15)."""
    write_distant_corpus(folder)
    config.corpus.replay_ratio = 0.0
    return config


def expected_lr(step: int, peak: float, total: int) -> float:
    """Cosine from the peak (no warmup) down to 10% of it: the LR of optimizer step `step`."""
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / total)))


def test_forgetting_rolls_back_halves_the_lr_then_stops_when_rollbacks_run_out(tmp_path, tiny_model_dir):
    peak, total = 5e-3, 20
    config = _distant_corpus(tiny_run_config(
        tiny_model_dir, tmp_path / "data", schedule=ScheduleConfig(peak_lr=peak, max_steps=total, warmup_ratio=0),
        eval=EvalConfig(interval=5, heldout_count=8), checkpoints=CheckpointConfig(interval=5, keep=2),
        guard=GuardConfig(threshold=0.15, remedy="lr", max_rollbacks=1)), tmp_path / "data")
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "stopped"

    events = read_events(RunPaths(run_dir).events)[0]
    first, last = [e for e in events if e["type"] == "guard"]
    assert (first["step"], first["action"], first["rolled_back_to"]) == (15, "rollback", 10)
    assert first["forgetting"] > first["threshold"] == 0.15 and first["remedy"].startswith("learning rate x0.5")
    assert last["action"] == "stop" and last["step"] > 10
    status = events[-1]
    assert status["state"] == "stopped" and status["guard"] and "after 1 rollback(s)" in status["message"]

    # the attempt after the rollback: resumed from step 10, on exactly half the schedule
    resumed_at = next(i for i, e in enumerate(events) if e.get("resumed_from") == 10)
    after = [e for e in events[resumed_at:] if e["type"] == "step"]
    assert [e["step"] for e in after] == list(range(11, last["step"] + 1))
    assert [e["lr"] for e in after] == pytest.approx(
        [0.5 * expected_lr(e["step"], peak, total) for e in after], rel=1e-9)
    before = [e for e in events[:resumed_at] if e["type"] == "step"]
    assert [e["lr"] for e in before] == pytest.approx([expected_lr(e["step"], peak, total) for e in before], rel=1e-9)

    assert GuardState.load(run_dir).lr_scale == 0.5
    assert "checkpoint-10" in [p.name for p in list_checkpoints(run_dir)]
    assert all(e["forgetting"] <= 0.15 for e in events_of(run_dir, "checkpoint"))  # no bad step saved

    db = store.open_store(":memory:")
    run_id = store.index_run(db, run_dir)
    rows = store.run_guard(db, run_id)
    assert [(r["step"], r["action"]) for r in rows] == [(15, "rollback"), (last["step"], "stop")]
    assert rows[0]["forgetting"] == pytest.approx(first["forgetting"]) and rows[0]["threshold"] == 0.15
    assert [s for s, _, _ in store.run_metrics(db, run_id, "lr")] == list(range(1, last["step"] + 1))


@pytest.fixture
def inject(monkeypatch):
    """Make the loss of one optimizer step NaN (or 10x), the first time it runs: each of its
    micro-batches, and none when the step runs again after the rollback."""
    def arm(at_step: int, how: str, micro_batches: int = 5):
        original, seen = CPTTrainer.compute_loss, []

        def compute_loss(self, model, inputs, *args, **kwargs):
            loss = original(self, model, inputs, *args, **kwargs)
            if self.state.global_step == at_step - 1:
                seen.append(True)
                if len(seen) <= micro_batches:
                    return loss * float("nan") if how == "nan" else loss * 10
            return loss
        monkeypatch.setattr(CPTTrainer, "compute_loss", compute_loss)
    return arm


@pytest.mark.parametrize("how, reason", [("nan", "non-finite loss"), ("spike", "loss spike")])
def test_a_bad_loss_rolls_back_and_the_remedy_survives_a_resume(tmp_path, tiny_model_dir, inject, how, reason):
    inject(at_step=13, how=how)
    config = tiny_run_config(tiny_model_dir, tmp_path / "data",
                             schedule=ScheduleConfig(peak_lr=1e-3, max_steps=20, warmup_ratio=0),
                             eval=EvalConfig(interval=5, heldout_count=8),
                             checkpoints=CheckpointConfig(interval=5, keep=2), guard=GuardConfig(remedy="both"))
    run_dir = create_run(config, tmp_path / "runs")
    assert train(run_dir) == "finished"

    [guard] = events_of(run_dir, "guard")
    assert (guard["step"], guard["reason"], guard["rolled_back_to"]) == (13, reason, 10)
    assert "replay ratio 5% -> 10%" in guard["remedy"] and "learning rate x0.5" in guard["remedy"]
    steps = [e for e in history(run_dir) if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 21)) and all(math.isfinite(e["loss"]) for e in steps)
    assert {e["replay_fraction"] for e in steps if e["step"] <= 10} == {0.05}
    assert {e["replay_fraction"] for e in steps if e["step"] > 10} == {0.10}  # 2 of 20 sequences
    halved = {e["step"]: e["lr"] for e in steps}

    # resuming from a checkpoint saved after the rollback keeps the remedy, not halving twice
    for path in list_checkpoints(run_dir):
        if path.name in ("checkpoint-20",):
            import shutil
            shutil.rmtree(path)
    assert train(run_dir, resume=True) == "finished"
    again = [e for e in history(run_dir) if e["type"] == "step"]
    assert {e["step"]: e["lr"] for e in again} == pytest.approx(halved, rel=1e-9)
    assert {e["replay_fraction"] for e in again if e["step"] > 15} == {0.10}
    assert max(e["step"] for e in events_of(run_dir, "guard")) == 13  # nothing new to guard against
