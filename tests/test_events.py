"""The event log: torn lines ignored, the last status found from the end, resumes applied."""

import pytest

from cpt_studio.core.events import EventWriter, last_event, read_events
from cpt_studio.core.testing.run_helpers import timeline_of


@pytest.fixture
def log(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    writer.emit("status", 0, state="running")
    for step in range(1, 3001):
        writer.emit("step", step, loss=1.0 / step)
    writer.emit("status", 3000, state="finished")
    writer.emit("log", 3000, message="after the status")
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"type": "status", "state": "tor')  # being written
    return tmp_path / "events.jsonl"


@pytest.mark.parametrize("chunk", [3, 17, 4096, 1 << 22])
def test_last_event_reads_backwards_and_skips_a_torn_line(log, chunk):
    assert last_event(log, "status", chunk=chunk).state == "finished"
    assert last_event(log, "step", chunk=chunk).step == 3000
    assert last_event(log, "eval", chunk=chunk) is None


def test_read_events_in_chunks_returns_each_event_once(log):
    offset, seen = 0, []
    while True:
        events, offset = read_events(log, offset, max_bytes=1000)
        if not events:
            break
        seen += events
    assert [e["type"] for e in seen] == ["status"] + ["step"] * 3000 + ["status", "log"]


def test_timeline_drops_what_a_resume_replaced():
    events = [{"type": "step", "step": s} for s in (1, 2, 3, 4)]
    events += [{"type": "status", "step": 2, "resumed_from": 2}, {"type": "step", "step": 3}]
    assert [e["step"] for e in timeline_of(events) if e["type"] == "step"] == [1, 2, 3]


# -- typed events ----------------------------------------------------------------------------

import ast  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import cpt_studio.core  # noqa: E402
import cpt_studio.gui  # noqa: E402
from cpt_studio.core.events import (  # noqa: E402
    EVENT_CLASSES,
    EventTail,
    GuardEvent,
    Phase,
    State,
    StatusEvent,
    StepEvent,
    make_event,
    parse_event,
)
from cpt_studio.core.timeline import RunTimeline  # noqa: E402

PACKAGES = [Path(cpt_studio.core.__file__).parent, Path(cpt_studio.gui.__file__).parent]


def test_the_writer_refuses_a_field_or_phase_its_event_type_does_not_have(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    with pytest.raises(TypeError, match="step events have no field.*bogus"):
        writer.emit("step", 1, loss=1.0, bogus=2)
    with pytest.raises(ValueError, match="unknown phase 'warming'"):
        writer.emit("status", None, state="running", phase="warming")
    with pytest.raises(ValueError, match="unknown event type 'metrics'"):
        writer.emit("metrics", 1)
    assert (tmp_path / "events.jsonl").read_text() == ""  # nothing half-written


def test_the_reader_keeps_what_it_does_not_know():
    event = parse_event({"type": "status", "step": 3, "state": "running", "phase": "compiling",
                         "documents": 12, "message": "m"})
    assert isinstance(event, StatusEvent) and event.state is State.RUNNING
    assert event.phase is None and event.extra == {"phase": "compiling", "documents": 12}
    assert event.get("documents") == 12 and event.get("message") == "m"
    unknown = parse_event({"type": "heartbeat", "step": 1, "beat": 5})
    assert type(unknown).TYPE == "" and unknown.extra == {"beat": 5}


@pytest.mark.parametrize("type_", sorted(EVENT_CLASSES))
def test_each_event_type_reads_back_as_it_was_written(tmp_path, type_):
    fields = {"step": {"loss": 2.5, "lr": 1e-4, "tokens": 512},
              "eval": {"baseline": True, "domain_ppl": 30.0, "medical_ppl": 12.0},
              "checkpoint": {"path": "checkpoints/checkpoint-10", "domain_gain": 0.1},
              "guard": {"reason": "forgetting", "action": "rollback", "rolled_back_to": 10,
                        "loss": 3.0},
              "benchmark": {"task": "arc_easy", "metric": "acc", "value": 0.5, "primary": True},
              "probe": {"task": "probes_mc", "metric": "acc", "value": 0.2, "live": True},
              "status": {"state": "finished", "phase": "done", "exit_code": 0},
              "log": {"level": "warning", "message": "careful"}}[type_]
    written = EventWriter(tmp_path / "events.jsonl").emit(type_, 10, **fields)
    [event] = EventTail(tmp_path / "events.jsonl").read()
    assert isinstance(event, EVENT_CLASSES[type_]) and event.to_dict() == written
    assert {k: written[k] for k in fields} == fields


def _literals(pattern: str) -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            found |= set(re.findall(pattern, path.read_text(encoding="utf-8")))
    return found


def test_every_phase_core_emits_is_a_phase_the_monitor_knows():
    from cpt_studio.gui.monitor import PHASE_COLOURS

    emitted = _literals(r'phase=["\'](\w+)["\']') | _literals(r'"phase": ["\'](\w+)["\']')
    assert emitted and emitted <= {phase.value for phase in Phase}, emitted
    assert set(PHASE_COLOURS) == set(Phase)


def test_every_event_type_read_is_written_somewhere():
    """A type a consumer handles (an on_<type> hook) is one the engine writes."""
    written = _literals(r'emit\(\s*["\'](\w+)["\']') | _literals(r'"type": ["\'](\w+)["\']')
    written |= {"probe", "benchmark"}  # evaljob.emit_scores: emit("probe" if ... else "benchmark")
    hooks = _literals(r"def on_(\w+)\(self, event") - {"resume"}
    assert hooks <= written <= set(EVENT_CLASSES), (hooks, written)


def test_only_the_events_module_and_the_timeline_read_the_stream():
    """One reader: nothing in the package parses events.jsonl its own way."""
    readers = []
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            if path.name in ("events.py", "timeline.py") or "testing" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            if "read_events" in names:
                readers.append(path.name)
    assert readers == []


def test_a_timeline_fed_in_pieces_equals_one_read_of_the_whole(log):
    text = log.read_text()
    log.write_text(text[:text.rfind("\n") + 1]  # without the torn line
                   + '{"type": "status", "step": 1000, "state": "running", "resumed_from": 1000}\n')
    whole = RunTimeline.load(log)
    piecewise = RunTimeline(log)
    while piecewise.update(max_bytes=777):
        pass
    assert [e.to_dict() for e in piecewise.events] == [e.to_dict() for e in whole.events]
    assert [e.step for e in whole.of(StepEvent)] == list(range(1, 1001))
    assert whole.status.state is State.RUNNING and whole.started is not None


def test_the_guard_event_names_its_fields_as_the_decision_record_does():
    record_fields = {"step", "reason", "action", "rolled_back_to", "remedy"}  # guard._noted
    assert record_fields <= {f for f in GuardEvent.__dataclass_fields__}
    event = make_event("guard", step=13, reason="loss spike", action="stop")
    assert event.rolled_back_to is None and event.reason == "loss spike"


def test_a_bad_line_is_named_by_file_and_line_whichever_reader_meets_it(tmp_path, capsys):
    """The tail names it (so the store, the CLI and the GUI do), even read from an offset."""
    from cpt_studio.core.events import EventsFileError

    path = tmp_path / "events.jsonl"
    writer = EventWriter(path)
    writer.emit("step", 1, loss=1.0)
    tail = EventTail(path)
    tail.read()
    writer.emit("step", 2, loss=1.0)
    with open(path, "a") as f:
        f.write("[1, 2]\n")
    with pytest.raises(EventsFileError, match=r"events.jsonl line 3: not a JSON event \(not a JSON object\)"):
        tail.read()
    with pytest.raises(ValueError, match="line 3"):
        RunTimeline.load(path)


def test_elapsed_leaves_out_the_wait_between_a_stop_and_its_resume():
    """Two attempts: 0-21 s (stopped at 21), then the user resumes at 1000 s and it works until
    1010 s: 31 s of training, not 1010; while running, counted up to now."""
    from cpt_studio.core.events import parse_event

    timeline = RunTimeline()
    assert timeline.elapsed() == 0.0
    timeline.feed(parse_event(e) for e in [
        {"type": "status", "time": 0.0, "state": "running", "phase": "loading"},
        {"type": "step", "time": 10.0, "step": 1, "loss": 3.0},
        {"type": "step", "time": 20.0, "step": 2, "loss": 2.9},
        {"type": "status", "time": 21.0, "state": "stopped"},
        {"type": "status", "time": 1000.0, "state": "running", "phase": "loading", "resumed_from": 2},
        {"type": "step", "time": 1010.0, "step": 3, "loss": 2.8},
    ])
    assert timeline.elapsed() == 31.0
    assert timeline.elapsed(now=1015.0) == 36.0


def test_the_cli_progress_line_gives_the_mfu_where_the_step_has_one(tmp_path, capsys):
    from cpt_studio.core.cli_runs import ProgressPrinter

    for name, mfu in (("gpu", 0.413), ("cpu", None)):  # None: a CPU, or a log from before MFU
        EventWriter(tmp_path / name).emit("step", 1, loss=2.5, lr=1e-5, tokens_per_second=5200.0, mfu=mfu)
        ProgressPrinter(tmp_path / name).update()
    gpu, cpu = capsys.readouterr().out.splitlines()
    assert gpu.endswith("loss 2.5000  lr 1e-05  5,200 tokens/s   41% MFU")
    assert cpu.endswith("loss 2.5000  lr 1e-05  5,200 tokens/s")
