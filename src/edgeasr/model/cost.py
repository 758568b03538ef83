"""Per-frame encoder cost of a model, the input of the device simulator.

For the plain LSTM encoder every output frame costs the same; for the amortized encoder each
frame costs what the branch the arbitrator picked for it costs. Multiply-adds count non-zero
weights, so pruned models are charged for what a zero-skipping kernel would do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeasr.model.amortized import AmortizedEncoder
from edgeasr.model.transducer import Transducer
from edgeasr.runtime.devicesim import DEFAULT_MFLOPS, simulate


def frame_seconds(model: Transducer) -> float:
    return model.cfg.subsampling * 0.01


@torch.inference_mode()
def encoder_trace(model: Transducer, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Branch index (T',) and multiply-adds (T',) of each encoder frame of one utterance.

    The amortized encoder routes with hard choices, its backlog simulated at its own
    ``device_mflops``; set that attribute first to trace for another device.
    """
    model.eval()
    enc = model.encoder
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None]
    lens = torch.tensor([x.shape[1]])
    if isinstance(enc, AmortizedEncoder):
        _, out_lens, _, weights, _ = enc.forward_routed(model.normalize(x), lens)
        branch = weights[0, : int(out_lens[0])].argmax(-1).numpy()
        return branch, np.asarray(enc.frame_macs(), dtype=np.float64)[branch]
    n = int(lens[0]) // model.cfg.subsampling
    return np.zeros(n, dtype=np.int64), np.full(n, float(enc.frame_macs()))


@dataclass
class UttSimulation:
    id: str
    frames: int
    mean_macs: float  # per encoder frame
    fast_share: float  # frames not on branch 0 (the full one)
    latency_s: float
    max_backlog_s: float
    busy_ratio: float
    # fast path (not branch 0) on the frame holding the end of speech, and on the one before:
    # a latency under one fast frame needs both (a full frame before leaves a backlog)
    end_fast: bool = False
    before_end_fast: bool = False


def speech_ends(cuts_file: Path) -> dict[str, float]:
    """End of speech (seconds from the start of the cut) of every cut, from its supervision."""
    from lhotse import CutSet

    return {c.id: max(s.end for s in c.supervisions) for c in CutSet.from_file(cuts_file)}


def simulate_cache(
    model: Transducer,
    cache,
    ends: dict[str, float],
    device_mflops: float = DEFAULT_MFLOPS,
    max_utts: int = 0,
) -> list[UttSimulation]:
    """Route every utterance of a FeatureCache and run it through the simulated device."""
    enc = model.encoder
    if isinstance(enc, AmortizedEncoder):
        enc.device_mflops = device_mflops  # the arbitrator's backlog follows the device
    utts = cache.utts if not max_utts else cache.utts[:max_utts]
    out = []
    for u in utts:
        branch, macs = encoder_trace(model, cache.features(u))
        if len(macs) == 0:
            continue
        sim = simulate(macs, frame_seconds(model), device_mflops, ends.get(u.id))
        e = sim.speech_end_frame
        out.append(
            UttSimulation(
                u.id,
                len(macs),
                float(macs.mean()),
                float((branch != 0).mean()),
                sim.latency_s,
                float(sim.backlog_s.max()),
                sim.busy_ratio,
                bool(branch[e] != 0),
                bool(e > 0 and branch[e - 1] != 0),
            )
        )
    return out


def equal_cost_single(
    sims: list[UttSimulation], ends: dict[str, float], frame_s: float, device_mflops: float
) -> list[UttSimulation]:
    """The same utterances through a single encoder that spends the routed model's mean
    multiply-adds (over all frames) on every frame: the equal-cost baseline of the latency bar.
    Its latency depends on its cost alone, not on its weights, so no such model is needed."""
    frames = np.array([s.frames for s in sims], dtype=np.float64)
    macs = float(np.sum(frames * [s.mean_macs for s in sims]) / frames.sum())
    out = []
    for s in sims:
        sim = simulate(np.full(s.frames, macs), frame_s, device_mflops, ends.get(s.id))
        out.append(
            UttSimulation(
                s.id, s.frames, macs, 0.0, sim.latency_s, float(sim.backlog_s.max()), sim.busy_ratio
            )
        )
    return out


def summarize(sims: list[UttSimulation]) -> dict[str, float]:
    """Frame-weighted mean cost and fast share; latency percentiles over utterances."""
    frames = np.array([s.frames for s in sims], dtype=np.float64)
    lat = np.array([s.latency_s for s in sims])
    return {
        "utterances": len(sims),
        "mean_macs_per_frame": float(np.sum(frames * [s.mean_macs for s in sims]) / frames.sum()),
        "fast_share": float(np.sum(frames * [s.fast_share for s in sims]) / frames.sum()),
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p90_s": float(np.percentile(lat, 90)),
        "latency_max_s": float(lat.max()),
        "busy_ratio_mean": float(np.mean([s.busy_ratio for s in sims])),
        "end_fast_share": float(np.mean([s.end_fast for s in sims])),
        "end_pair_fast_share": float(np.mean([s.end_fast and s.before_end_fast for s in sims])),
    }
