"""Replay mixing: the configured fraction in every optimizer step, deterministic, resumable."""

import pytest

from cpt_studio.core.mixing import MixingSampler, ReplayMixer


@pytest.mark.parametrize("ratio", [0, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("seqs_per_step", [8, 64])
def test_every_step_is_within_one_sequence_of_the_target(ratio, seqs_per_step):
    mixer = ReplayMixer(n_domain=500, n_general=97, replay_ratio=ratio, seqs_per_step=seqs_per_step)
    target = ratio * seqs_per_step
    total = 0
    for step in range(200):
        indices = mixer.step(step)
        general = sum(i >= 500 for i in indices)
        assert len(indices) == seqs_per_step
        assert abs(general - target) < 1
        total += general
    assert total == int(200 * target)  # exact over the run, not only on average


def test_five_percent_of_64_is_three_or_four_spread_through_the_step():
    mixer = ReplayMixer(1000, 1000, 0.05, 64)
    for step in range(50):
        slots = [j for j, i in enumerate(mixer.step(step)) if i >= 1000]
        assert len(slots) in (3, 4)
        assert max(b - a for a, b in zip([0] + slots, slots + [64], strict=True)) <= 64 // 3 + 1


def test_deterministic_for_a_seed_and_resumable_at_any_step():
    a, b = ReplayMixer(300, 50, 0.2, 16, seed=7), ReplayMixer(300, 50, 0.2, 16, seed=7)
    other = ReplayMixer(300, 50, 0.2, 16, seed=8)
    run = list(MixingSampler(a, end_step=40))
    assert run == list(MixingSampler(b, end_step=40)) and run != list(MixingSampler(other, end_step=40))
    resumed = list(MixingSampler(ReplayMixer(300, 50, 0.2, 16, seed=7), end_step=40, start_step=23))
    assert resumed == run[23 * 16:]


def test_each_pass_visits_every_sequence_once_and_cycling_is_reported():
    passes = []
    mixer = ReplayMixer(40, 6, 0.25, 8, on_new_pass=lambda name, n, step: passes.append((name, n, step)))
    seen = [i for step in range(5) for i in mixer.step(step)]  # 30 domain, 10 general draws
    assert sorted(i for i in seen if i < 40) == sorted(set(i for i in seen if i < 40))  # no repeat in a pass
    general = [i - 40 for i in seen if i >= 40]
    assert sorted(general[:6]) == list(range(6))  # the whole general corpus before any repeat
    assert ("general", 2, 3) in passes and not any(name == "domain" for name, _, _ in passes)
    assert mixer.passes(5) == (1, 2)


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="general corpus gives no training sequence"):
        ReplayMixer(10, 0, 0.05, 8)
    with pytest.raises(ValueError, match="below 1"):
        ReplayMixer(10, 10, 1.5, 8)
