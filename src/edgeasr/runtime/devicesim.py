"""A simulated device for streaming encoders: real-time arrival, a FLOPs budget, one queue.

Frame ``t`` (``frame_s`` long) arrives when its last sample has arrived, at ``(t + 1) frame_s``;
the device takes frames in order, one at a time, each for ``2 x macs / (mflops x 1e6)`` seconds
(one multiply-add = 2 FLOPs). Costs come from the model's shapes (non-zero weights), so results
do not depend on the machine that runs the simulation.

*Backlog* of frame t: how long it waits after arrival before the device starts on it.
*End-of-speech latency*: from the arrival of the frame that holds the last speech sample to the
moment the device has encoded it, i.e. the delay a user waits beyond what streaming itself
imposes. numpy only: this belongs to the runtime side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MFLOPS = 650.0  # a single thread of a small device


@dataclass
class Simulation:
    arrival_s: np.ndarray  # (T,) when each frame is available
    start_s: np.ndarray  # (T,) when the device starts on it
    finish_s: np.ndarray  # (T,) when it is encoded
    speech_end_frame: int

    @property
    def backlog_s(self) -> np.ndarray:
        return self.start_s - self.arrival_s

    @property
    def latency_s(self) -> float:
        e = self.speech_end_frame
        return float(self.finish_s[e] - self.arrival_s[e])

    @property
    def busy_ratio(self) -> float:
        """Compute time over audio time: above 1 the device cannot keep up in real time."""
        busy = float(np.sum(self.finish_s - self.start_s))
        return busy / float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0


def simulate(
    frame_macs: np.ndarray,
    frame_s: float,
    device_mflops: float = DEFAULT_MFLOPS,
    speech_end_s: float | None = None,
) -> Simulation:
    """Run one utterance's per-frame costs through the device queue.

    Args:
        frame_macs: (T,) multiply-adds spent on each frame (its branch plus shared parts).
        frame_s: frame duration in seconds.
        device_mflops: device speed in millions of FLOPs per second.
        speech_end_s: end of speech in the utterance (default: its last frame).
    """
    macs = np.asarray(frame_macs, dtype=np.float64)
    if macs.ndim != 1 or len(macs) == 0:
        raise ValueError("frame_macs must be a non-empty 1-D array")
    if device_mflops <= 0 or frame_s <= 0:
        raise ValueError("device_mflops and frame_s must be positive")
    T = len(macs)
    arrival = (np.arange(T) + 1) * frame_s
    cost = 2.0 * macs / (device_mflops * 1e6)
    start = np.empty(T)
    finish = np.empty(T)
    free_at = 0.0
    for t in range(T):
        start[t] = max(arrival[t], free_at)
        free_at = finish[t] = start[t] + cost[t]
    if speech_end_s is None:
        end = T - 1
    else:
        end = min(T - 1, max(0, math.ceil(speech_end_s / frame_s - 1e-9) - 1))
    return Simulation(arrival, start, finish, end)
