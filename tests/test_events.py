"""The event log: torn lines ignored, the last status found from the end, resumes applied."""

import pytest

from cpt_studio.core.events import EventWriter, last_event, read_events, timeline


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
    assert last_event(log, "status", chunk=chunk)["state"] == "finished"
    assert last_event(log, "step", chunk=chunk)["step"] == 3000
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
    assert [e["step"] for e in timeline(events) if e["type"] == "step"] == [1, 2, 3]
