"""The smoothed training loss: a bias-corrected exponential moving average.

    smooth, state = smoothed_loss(loss)                  # the whole curve
    more, state = smoothed_loss(new_loss, state=state)   # extended as steps arrive

The monitor draws it over the raw loss and reads it out at the crosshair.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import lfilter

LOSS_SMOOTHING = 0.95
"""β of the loss's moving average: each step's weight decays by 5% per later step (about the
last 20 steps count)."""


class EmaState(NamedTuple):
    """Where a moving average stopped: its biased average and how many finite values it saw."""

    average: float = 0.0
    count: int = 0


def smoothed_loss(values: np.ndarray, beta: float = LOSS_SMOOTHING,
                  state: EmaState | None = None) -> tuple[np.ndarray, EmaState]:
    """The bias-corrected exponential moving average of `values` (shape (n,), any unit), and
    the state to extend it with the next values (None: start afresh).

    m_t = β·m_(t-1) + (1-β)·x_t with m_0 = 0, shown as m_t / (1 - β^t): the bias correction of
    Adam's moment estimates (Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2015,
    section 3) and of TensorBoard's scalar smoothing, so the first points are not pulled
    towards zero. A non-finite value (a NaN or infinite loss) is left out of the average, as
    TensorBoard does, and the curve keeps its last value there (NaN before the first finite
    value). Raises ValueError for β outside [0, 1)."""
    if not 0 <= beta < 1:
        raise ValueError(f"the smoothing β must be in [0, 1), got {beta}")
    state = state or EmaState()
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    x = values[finite]
    if not len(x):
        return np.full(len(values), _shown(state, beta)), state
    average, _ = lfilter([1 - beta], [1, -beta], x, zi=[beta * state.average])
    count = state.count + np.arange(1, len(x) + 1)
    shown = np.full(len(values), np.nan)
    shown[finite] = average / (1 - beta ** count)
    # carry the last smoothed value over the non-finite ones
    index = np.where(finite, np.arange(len(values)), -1)
    np.maximum.accumulate(index, out=index)
    shown = np.where(index >= 0, shown[np.maximum(index, 0)], _shown(state, beta))
    return shown, EmaState(float(average[-1]), int(count[-1]))


def _shown(state: EmaState, beta: float) -> float:
    return state.average / (1 - beta ** state.count) if state.count else np.nan
