"""Learned end-of-query classifier: training data from the runtime, training, threshold tuning.

The corpus knows where speech ends in every utterance (supervision start + duration) and
contains mid-sentence pauses ("call ... jonathan"). We stream each utterance, with a stretch of
silence appended, through the device runtime itself and record, per encoder frame, what the
end-pointer sees (:class:`edgeasr.runtime.recognizer.FrameInfo`). Frames with some trailing
non-speech are labelled "speech is over" if they lie after the true end and "not yet" if they
lie inside a pause. A tiny MLP on [encoder output, trailing seconds] learns the difference, which
the rule alone cannot know. Thresholds are then tuned by replaying recorded dev frames through
the very :class:`~edgeasr.runtime.endpoint.Endpointer` the device runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from edgeasr.fileio import atomic_write_bytes, sha256_file
from edgeasr.runtime.endpoint import NEVER, EndpointConfig, Endpointer, classifier_input
from edgeasr.runtime.recognizer import FrameInfo, Recognizer

log = logging.getLogger(__name__)

CLASSIFIER_FILE = "endpoint.safetensors"


class EndOfQueryMLP(nn.Module):
    """:func:`~edgeasr.runtime.endpoint.classifier_input` rows → p(the speaker has finished)."""

    def __init__(self, in_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


@dataclass
class Trace:
    """Recorded frames of one utterance and where its speech really ended."""

    id: str
    speech_end_s: float
    has_pause: bool
    frames: list[FrameInfo]
    frame_shift_s: float
    text: str

    def time(self, f: FrameInfo) -> float:
        return f.frame * self.frame_shift_s


def record_trace(
    never: Recognizer,
    utt_id: str,
    audio: np.ndarray,
    speech_end_s: float,
    text: str = "",
    has_pause: bool = False,
) -> Trace:
    """Stream one utterance through ``never`` (a Recognizer whose end-pointers never fire, see
    :data:`NEVER`) and record every frame."""
    st = never.create_stream()
    st.frame_log = []
    st.accept_waveform(audio)
    return Trace(utt_id, speech_end_s, has_pause, st.frame_log, never.frame_shift_s, text)


def record_traces(
    package: str | Path,
    cuts: CutSet,
    max_utts: int = 0,
    silence_s: float = 2.0,
    variant: str = "fp32",
    desc: str = "tracing",
) -> list[Trace]:
    """Stream each cut (plus ``silence_s`` of digital silence) through the runtime package with
    end-pointers that never fire, recording every frame."""
    never = Recognizer(package, variant, endpoint=NEVER)
    cut_list = list(cuts)
    if max_utts and len(cut_list) > max_utts:
        stride = len(cut_list) / max_utts
        cut_list = [cut_list[int(i * stride)] for i in range(max_utts)]
    traces = []
    for cut in tqdm(cut_list, desc=desc, unit="utt"):
        sup = cut.supervisions[0]
        audio = cut.load_audio()[0].astype(np.float32)
        audio = np.concatenate([audio, np.zeros(int(silence_s * 16000), np.float32)])
        end = float(sup.start + sup.duration - cut.start)
        pause = bool((sup.custom or {}).get("pauses_s"))
        traces.append(record_trace(never, cut.id, audio, end, sup.text, pause))
    return traces


def _features(frames: list[FrameInfo]) -> np.ndarray:
    return classifier_input(
        np.stack([f.enc for f in frames]),
        np.stack([f.dec for f in frames]),
        np.array([f.trailing_s for f in frames]),
    )


def training_frames(
    traces: list[Trace], min_trailing_s: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Frames where the classifier is consulted (speech decoded, some trailing non-speech),
    labelled 1 after the true end of speech, 0 before it (inside pauses and words)."""
    xs, ys = [], []
    for tr in traces:
        frames = [f for f in tr.frames if f.has_speech and f.trailing_s >= min_trailing_s]
        if not frames:
            continue
        xs.append(_features(frames))
        ys.append(np.array([tr.time(f) > tr.speech_end_s for f in frames], np.float32))
    return np.concatenate(xs), np.concatenate(ys)


def train_classifier(
    x: np.ndarray, y: np.ndarray, epochs: int = 30, hidden: int = 64, seed: int = 0
) -> EndOfQueryMLP:
    """Class-balanced binary cross-entropy with Adam; small enough for a few seconds on CPU."""
    torch.manual_seed(seed)
    model = EndOfQueryMLP(x.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    pos = float(yt.mean())
    weight = torch.where(yt > 0.5, 0.5 / max(pos, 1e-3), 0.5 / max(1 - pos, 1e-3))
    for _ in tqdm(range(epochs), desc="end-of-query classifier", unit="epoch"):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 512):
            idx = perm[i : i + 512]
            p = model(xt[idx]).squeeze(1).clamp(1e-6, 1 - 1e-6)
            loss = nn.functional.binary_cross_entropy(p, yt[idx], weight=weight[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def predict(model: EndOfQueryMLP, frames: list[FrameInfo]) -> list[float | None]:
    """p(end) per frame as the runtime computes it (None where nothing is decoded yet)."""
    if not frames:
        return []
    with torch.inference_mode():
        p = model(torch.from_numpy(_features(frames))).squeeze(1).numpy()
    return [float(v) if f.has_speech else None for v, f in zip(p, frames, strict=True)]


@dataclass
class Replay:
    """When the end-pointers fired on one utterance, replayed from its trace."""

    speculative_s: float | None  # the speculative end standing when the final one fired
    final_s: float | None
    resets: int
    speculative_text: str | None  # first transcript handed downstream
    final_text: str


def replay(tr: Trace, cfg: EndpointConfig, p_end: list[float | None]) -> Replay:
    """Run the device's Endpointer over recorded frames until the first ``final_end``."""
    ep = Endpointer(cfg)
    spec_t = first_spec_text = None
    resets = 0
    for f, p in zip(tr.frames, p_end, strict=True):
        for kind in ep.step(f.text, f.trailing_s, f.utterance_s, f.has_speech, p):
            if kind == "speculative_end":
                spec_t = tr.time(f)
                first_spec_text = f.text if first_spec_text is None else first_spec_text
            elif kind == "reset":
                resets += 1
                spec_t = None
            elif kind == "final_end":
                return Replay(spec_t, tr.time(f), resets, first_spec_text, f.text)
    last = tr.frames[-1].text if tr.frames else ""
    return Replay(spec_t, None, resets, first_spec_text, last)


def replay_events(events: list) -> Replay:
    """The same summary as :func:`replay`, from the events a real stream emitted."""
    spec_t = first_spec_text = None
    resets = 0
    text = ""
    for ev in events:
        text = ev.text
        if ev.kind == "speculative_end":
            spec_t = ev.time_s
            first_spec_text = ev.text if first_spec_text is None else first_spec_text
        elif ev.kind == "reset":
            resets += 1
            spec_t = None
        elif ev.kind == "final_end":
            return Replay(spec_t, ev.time_s, resets, first_spec_text, ev.text)
    return Replay(spec_t, None, resets, first_spec_text, text)


@dataclass
class EndpointStats:
    """Latencies from the true end of speech (seconds) and error rates over a set."""

    n: int
    final_p50: float
    final_p90: float
    speculative_p50: float
    speculative_p90: float
    lead_p50: float  # final minus speculative
    early_cutoff_rate: float
    reset_rate: float
    missed_rate: float  # never fired before the audio ended


def summarize(traces: list[Trace], replays: list[Replay]) -> EndpointStats:
    final = [r.final_s - t.speech_end_s for t, r in zip(traces, replays, strict=True) if r.final_s]
    spec = [
        r.speculative_s - t.speech_end_s
        for t, r in zip(traces, replays, strict=True)
        if r.speculative_s is not None and r.final_s is not None
    ]
    lead = [r.final_s - r.speculative_s for r in replays if r.final_s and r.speculative_s]
    pairs = zip(traces, replays, strict=True)
    early = sum(1 for t, r in pairs if r.final_s is not None and r.final_s < t.speech_end_s)

    def pct(v: list[float], q: float) -> float:
        return float(np.percentile(v, q)) if v else float("nan")

    n = len(traces)
    return EndpointStats(
        n=n,
        final_p50=pct(final, 50),
        final_p90=pct(final, 90),
        speculative_p50=pct(spec, 50),
        speculative_p90=pct(spec, 90),
        lead_p50=pct(lead, 50),
        early_cutoff_rate=early / max(n, 1),
        reset_rate=sum(r.resets > 0 for r in replays) / max(n, 1),
        missed_rate=sum(r.final_s is None for r in replays) / max(n, 1),
    )


def evaluate(
    traces: list[Trace], cfg: EndpointConfig, probs: list[list[float | None]]
) -> EndpointStats:
    return summarize(traces, [replay(t, cfg, p) for t, p in zip(traces, probs, strict=True)])


def _admissible(st: EndpointStats, max_early: float, min_lead_s: float) -> bool:
    return st.early_cutoff_rate <= max_early and st.lead_p50 >= min_lead_s - 1e-9


def tune(
    traces: list[Trace],
    probs: list[list[float | None]],
    use_classifier: bool = True,
    max_early: float = 0.02,
    min_lead_s: float = 0.16,
) -> tuple[EndpointConfig, EndpointStats]:
    """Grid search for the lowest final p90 latency with early cut-offs ≤ ``max_early`` and the
    speculative end-pointer at least ``min_lead_s`` ahead of the final one at the median.

    Without the classifier only the two rule lengths are searched: that is the tuned baseline.
    """
    shift = traces[0].frame_shift_s if traces else 0.08
    steps = [round(k * shift, 6) for k in range(1, 25)]
    rules = [(sp, fi) for sp in steps[1:8] for fi in steps[3:] if fi - sp >= min_lead_s - 1e-9]
    if use_classifier:
        # The rule stays as a long safety net behind the classifier.
        nets = [(sp, fi) for sp, fi in rules if sp in steps[3:8:2] and fi in steps[7::2]]
        grid = [
            EndpointConfig(sp, fi, smin, fmin, sthr, fthr)
            for sp, fi in nets
            for fmin in steps[1:5]
            for smin in steps[:3]
            if smin <= fmin
            for fthr in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
            for sthr in (0.3, 0.5, 0.7)
        ]
    else:
        grid = [EndpointConfig(sp, fi, use_classifier=False) for sp, fi in rules]

    def key(st: EndpointStats) -> tuple:
        # Admissible settings by latency; if none is, the fewest early cut-offs first.
        if _admissible(st, max_early, min_lead_s):
            return (0, st.final_p90)
        return (1, st.early_cutoff_rate, -st.lead_p50, st.final_p90)

    results = [
        (cfg, evaluate(traces, cfg, probs))
        for cfg in tqdm(grid, desc="tuning end-pointers", unit="cfg", leave=False)
    ]
    cfg, st = min(results, key=lambda r: key(r[1]))
    if not _admissible(st, max_early, min_lead_s):
        log.warning("end-pointer tuning: no setting meets the constraints; closest: %s", st)
    return cfg, st


def save_classifier(
    model_dir: str | Path, model: EndOfQueryMLP, config: EndpointConfig, info: dict
) -> None:
    """Add the classifier and its tuned end-pointer settings to a model package."""
    d = Path(model_dir)
    tmp = d / (CLASSIFIER_FILE + ".tmp")
    meta = {"hidden": str(model.net[0].out_features), "in_dim": str(model.net[0].in_features)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(d / CLASSIFIER_FILE)
    mf = d / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["files"][CLASSIFIER_FILE] = sha256_file(d / CLASSIFIER_FILE)
    manifest["endpoint"] = {"classifier": CLASSIFIER_FILE, "config": asdict(config), "info": info}
    atomic_write_bytes(mf, json.dumps(manifest, indent=2).encode())


def load_classifier(path: str | Path) -> EndOfQueryMLP:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model = EndOfQueryMLP(int(meta["in_dim"]), int(meta["hidden"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def train_endpointer(
    model_dir: str | Path,
    corpus: str | Path,
    train_utts: int = 3000,
    dev_utts: int = 0,
    epochs: int = 30,
) -> tuple[EndpointConfig, EndpointStats, EndpointStats]:
    """Record traces (train and dev), train the classifier, tune on dev, save into the package.

    Returns the tuned config, its dev stats, and the dev stats of the best rule alone (tuned
    under the same constraints) for comparison.
    """
    import tempfile

    from edgeasr.export.onnx import export_model_dir

    manifests = Path(corpus) / "manifests"
    with tempfile.TemporaryDirectory() as tmp:
        pkg = export_model_dir(model_dir, tmp, int8=False)
        train_cuts = CutSet.from_file(manifests / "train_cuts.jsonl.gz")
        train = record_traces(pkg, train_cuts, train_utts, desc="train traces")
        dev_cuts = CutSet.from_file(manifests / "dev_cuts.jsonl.gz")
        dev = record_traces(pkg, dev_cuts, dev_utts, desc="dev traces")
    x, y = training_frames(train)
    log.info("classifier frames: %d (%.1f%% after the end of speech)", len(y), 100 * y.mean())
    clf = train_classifier(x, y, epochs=epochs)
    xd, yd = training_frames(dev)
    with torch.inference_mode():
        pred = clf(torch.from_numpy(xd)).squeeze(1).numpy() > 0.5
    acc = float((pred == (yd > 0.5)).mean())
    probs = [predict(clf, t.frames) for t in dev]
    rule_cfg, rule = tune(dev, probs, use_classifier=False)
    cfg, stats = tune(dev, probs)
    info = {
        "train_utts": len(train),
        "train_frames": int(len(y)),
        "dev_utts": len(dev),
        "dev_frame_accuracy": acc,
        "dev_stats": asdict(stats),
        "dev_stats_rule_only": asdict(rule),
        "rule_config": asdict(rule_cfg),
    }
    save_classifier(model_dir, clf, cfg, info)
    return cfg, stats, rule
