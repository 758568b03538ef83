"""Runtime benchmark: speed, per-chunk latency and memory of torch, onnx fp32 and onnx int8
streaming decoding, with pocketsphinx on the same audio in the same run.

Usage (from the repository root)::

    python benchmarks/runtime.py --corpus data/corpus [--splits test test_xengine]
        [--max-utts N] [--model models/edgeasr-small-en] [--chunk-ms 160] [--threads 1]
    python benchmarks/runtime.py --wavs samples/*.wav --refs samples/references.tsv

The model package is exported to ONNX (fp32 + int8) into a temporary directory first, so the
numbers always come from the safetensors package given with ``--model``. Each system runs in its
own worker process (this script re-invoked with a hidden ``--worker`` option), so its peak memory
is its own and no system's allocations or thread pools disturb another's timing. The workers
stay alive side by side and the parent hands them one utterance at a time, rotating which goes
first; only one computes at any moment, so drift in machine load (it is shared) hits every system
equally. Audio is fed in ``--chunk-ms`` pieces as a microphone would deliver it; every call is
timed. Untimed checks afterwards: streaming vs whole-buffer transcripts, and torch vs onnx fp32
greedy transcripts (export parity).

Writes ``docs/results/runtime.{md,json,png}`` (or ``--out-dir``/``--name``) and prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import (
    REPO_ROOT,
    ResultsPage,
    benchmark_parser,
    command_line,
    decoding_overrides,
    even_subset,
    limit_threads,
    markdown_table,
    num,
    package_beam,
    pct,
    pkg_version,
    second_pass_note,
    set_torch_threads,
)

log = logging.getLogger("runtime")

TORCH = "torch"
FP32 = "onnx-fp32"
INT8 = "onnx-int8"
POCKETSPHINX = "pocketsphinx"
SYSTEMS = (TORCH, FP32, INT8, POCKETSPHINX)
EDGEASR_SYSTEMS = (TORCH, FP32, INT8)
LABELS = {
    TORCH: "edgeasr torch (streaming beam)",
    FP32: "edgeasr onnx fp32 (Recognizer stream)",
    INT8: "edgeasr onnx int8 (Recognizer stream)",
    POCKETSPHINX: "pocketsphinx (whole utterance)",
}
SAMPLE_RATE = 16000
# Bars from the issue.
RTF_BAR = 0.05
INT8_WER_REL_BAR = 0.05
PARITY_SPLIT = "test"


# ------------------------------------------------------------------------------------------------
# Inputs: utterances staged into one float32 file the workers read one utterance at a time
# ------------------------------------------------------------------------------------------------


@dataclass
class Item:
    id: str
    split: str
    group: str
    ref: str
    num_samples: int = 0
    offset: int = 0  # in samples, into the staged audio file

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE


def _resolve(path: Path) -> Path:
    """Relative paths are taken from the current directory, else from the repo root."""
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def corpus_items(corpus: Path, splits: Sequence[str], max_utts: int) -> list[tuple[Item, Any]]:
    """(item, loader) for the synthetic splits, via the accuracy benchmark's loader."""
    from accuracy import load_synthetic

    out: list[tuple[Item, Any]] = []
    for split in splits:
        utts = load_synthetic(corpus, split)
        if not utts:
            continue
        for u in even_subset(utts, max_utts):
            out.append((Item(u.id, split, u.group, u.text), u.load))
    return out


def wav_items(wavs: Sequence[Path], refs: Path, max_utts: int) -> list[tuple[Item, Any]]:
    """(item, loader) for audio files scored against a TSV with ``file``, ``text`` [, ``voice``]."""
    from edgeasr.audio import load_audio
    from edgeasr.corpus.text import normalize_text

    with refs.open(encoding="utf-8") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh, delimiter="\t")}
    out: list[tuple[Item, Any]] = []
    for w in even_subset(sorted(wavs), max_utts):
        row = rows.get(w.name)
        if row is None:
            log.warning("%s: no reference in %s; skipping it", w, refs)
            continue
        group = (row.get("voice") or "").partition(":")[0] or "all"
        item = Item(w.stem, "wavs", group, normalize_text(row["text"]))
        out.append((item, lambda p=w: load_audio(p, resample=True)))
    return out


def stage_audio(items: Sequence[tuple[Item, Any]], path: Path) -> list[Item]:
    """Write every utterance's float32 samples into one file; fill in offsets and lengths."""
    import numpy as np
    from tqdm import tqdm

    staged, offset = [], 0
    with path.open("wb") as fh:
        for item, load in tqdm(items, desc="loading audio", unit="utt", dynamic_ncols=True):
            x = np.ascontiguousarray(load(), dtype=np.float32)
            fh.write(x.tobytes())
            item.offset, item.num_samples = offset, len(x)
            offset += len(x)
            staged.append(item)
    return staged


# ------------------------------------------------------------------------------------------------
# Worker side: one system per process
# ------------------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_now_kb() -> int:
    """Current resident set size in KiB."""
    now = _proc_status_kb("VmRSS")
    return now if now is not None else _rss_peak_kb()


def _rss_peak_kb() -> int:
    """Peak resident set size of this process in KiB.

    Linux: ``VmHWM``, the high-water mark of this process's own address space. ``ru_maxrss``
    is not used there because the kernel carries it over from the forked parent image across
    ``exec``, so every worker would report at least the parent's size.
    """
    hwm = _proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


class _Audio:
    """Reads one staged utterance at a time (plain reads, no memory map, so RSS stays honest)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get(self, item: dict[str, Any]) -> Any:
        import numpy as np

        return np.fromfile(
            self.path, dtype=np.float32, count=item["num_samples"], offset=4 * item["offset"]
        )


def _chunks(n: int, step: int) -> range:
    return range(0, n, step)


class TorchEngine:
    """The training-side path: ``Transcriber.decode_streaming`` (beam search), on torch.

    ``decode_streaming`` feeds every piece to a ``StreamingFbank`` it creates itself and then
    runs the encoder chunk and beam search on what the piece completed. A subclass that stamps
    the clock on each ``accept_waveform``/``input_finished`` is put in its place, so per-piece
    compute times are read off the unchanged decoding code (one clock read per piece).
    """

    def __init__(self, job: dict[str, Any]) -> None:
        import torch

        import edgeasr.decode as dec
        from edgeasr.features import StreamingFbank

        marks: list[float] = []
        self.marks = marks

        class _StampedFbank(StreamingFbank):
            def accept_waveform(self, samples):  # type: ignore[no-untyped-def]
                marks.append(time.perf_counter())
                return super().accept_waveform(samples)

            def input_finished(self):  # type: ignore[no-untyped-def]
                marks.append(time.perf_counter())
                return super().input_finished()

        dec.StreamingFbank = _StampedFbank  # type: ignore[misc]
        self._torch = torch
        self.tr = dec.Transcriber.from_dir(
            job["model_dir"], method="beam", beam=job["beam"], **decoding_overrides(job["one_pass"])
        )
        self.greedy = dec.Transcriber(
            self.tr.model, self.tr.tokenizer, method="greedy", blank_penalty=self.tr.blank_penalty
        )
        self.chunk_ms = job["chunk_ms"]
        self.step = job["step"]
        self.blank_penalty = self.tr.blank_penalty
        self.warned = False

    def decode(self, samples: Any) -> dict[str, Any]:
        self.marks.clear()
        with self._torch.inference_mode():
            t0 = time.perf_counter()
            hyps = self.tr.decode_streaming(samples, chunk_ms=self.chunk_ms)
            text = self.tr.tokenizer.decode(hyps[0].tokens)
            t1 = time.perf_counter()
        n = len(_chunks(len(samples), self.step))
        out: dict[str, Any] = {"hyp": text, "secs": t1 - t0}
        m = self.marks
        if len(m) == n + 1:  # n pieces, then input_finished
            out["chunks_ms"] = [1e3 * (m[i + 1] - m[i]) for i in range(n)]
            out["final_ms"] = 1e3 * (t1 - m[n])
        elif not self.warned:  # decode_streaming no longer feeds StreamingFbank piece by piece
            log.warning("torch: %d clock stamps for %d pieces; no per-chunk times", len(m), n)
            self.warned = True
        return out

    def checks(self, samples: Any) -> dict[str, str]:
        from edgeasr.features import compute_fbank

        with self._torch.inference_mode():
            feats = compute_fbank(samples)
            offline = self.tr.decode_features(feats)[0]
            greedy = self.greedy.decode_features(feats)[0]
        dec = self.tr.tokenizer.decode
        return {"offline": dec(offline.tokens), "greedy": dec(greedy.tokens)}


class OnnxEngine:
    """The device runtime: a ``Recognizer`` stream whose end-pointers never fire mid-utterance,
    so one utterance gives exactly one ``final_end``."""

    def __init__(self, job: dict[str, Any], variant: str, greedy: bool = False) -> None:
        from edgeasr.runtime import Recognizer
        from edgeasr.runtime.endpoint import NEVER as never

        # Every end-pointer threshold out of reach; a shipped end-of-query classifier still runs
        # on every frame (its cost is the device's), it just can never end the utterance early.
        self.rec = Recognizer(
            job["onnx_dir"],
            variant=variant,
            beam=job["beam"],
            num_threads=job["threads"],
            endpoint=never,
            **decoding_overrides(job["one_pass"]),
        )
        self.step = job["step"]
        self.blank_penalty = self.rec.blank_penalty
        self.greedy = greedy

    @staticmethod
    def _finals(events: Sequence[Any]) -> list[str]:
        return [e.text for e in events if e.kind == "final_end"]

    def decode(self, samples: Any) -> dict[str, Any]:
        chunks, finals = [], []
        t0 = time.perf_counter()
        st = self.rec.create_stream()
        for start in _chunks(len(samples), self.step):
            a = time.perf_counter()
            events = st.accept_waveform(samples[start : start + self.step])
            chunks.append(1e3 * (time.perf_counter() - a))
            finals += self._finals(events)
        a = time.perf_counter()
        events = st.input_finished()
        t1 = time.perf_counter()
        finals += self._finals(events)
        return {
            "hyp": " ".join(f for f in finals if f),
            "secs": t1 - t0,
            "chunks_ms": chunks,
            "final_ms": 1e3 * (t1 - a),
            "num_finals": len(finals),
        }

    def checks(self, samples: Any) -> dict[str, str]:
        from edgeasr.features import compute_fbank
        from edgeasr.search.beam import greedy_search

        st = self.rec.create_stream()
        finals = self._finals(st.accept_waveform(samples) + st.input_finished())
        out = {"offline": " ".join(f for f in finals if f)}
        if self.greedy:
            model = self.rec.model
            feats = compute_fbank(samples)
            n = (len(feats) // model.subsampling) * model.subsampling
            tokens: list[int] = []
            if n:
                enc = model.encode_chunk(feats[:n], None)[0]
                tokens = greedy_search(model, enc, blank_penalty=self.blank_penalty).tokens
            out["greedy"] = self.rec.tokenizer.decode(tokens)
        return out


class SphinxEngine:
    """pocketsphinx's bundled English model, whole-utterance decoding (the accuracy peer)."""

    def __init__(self, job: dict[str, Any]) -> None:
        from edgeasr.baselines.pocketsphinx_asr import PocketSphinxASR

        self.asr = PocketSphinxASR()
        self.model_files = {k: Path(v).name for k, v in self.asr.model_files.items()}

    def decode(self, samples: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        text = self.asr.transcribe(samples)
        secs = time.perf_counter() - t0
        return {"hyp": text, "secs": secs, "final_ms": 1e3 * secs}


def _import_for(system: str, threads: int) -> None:
    """The libraries a system needs, imported before the baseline RSS is read."""
    import numpy  # noqa: F401

    if system == TORCH:
        set_torch_threads(threads)
        import edgeasr.decode  # noqa: F401
        import edgeasr.features  # noqa: F401
    elif system in (FP32, INT8):
        import edgeasr.runtime  # noqa: F401
        import edgeasr.search.beam  # noqa: F401
    else:
        import pocketsphinx  # noqa: F401

        import edgeasr.baselines.pocketsphinx_asr  # noqa: F401


def _make_engine(system: str, job: dict[str, Any]) -> Any:
    if system == TORCH:
        return TorchEngine(job)
    if system == FP32:
        return OnnxEngine(job, "fp32", greedy=True)
    if system == INT8:
        return OnnxEngine(job, "int8")
    return SphinxEngine(job)


def worker_main(system: str, job_path: Path) -> int:
    """Serve one system over stdin/stdout JSON lines: ``decode``, then ``finish``."""
    job = json.loads(job_path.read_text())
    limit_threads(job["threads"])
    # The protocol gets its own copy of stdout; anything a library prints goes to stderr.
    proto: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(msg: dict[str, Any]) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    try:
        _import_for(system, job["threads"])
        baseline = _rss_now_kb()
        t0 = time.perf_counter()
        engine = _make_engine(system, job)
        load_s = time.perf_counter() - t0
        audio = _Audio(job["audio"])
        items = job["items"]
        # Untimed warm-up on the first second of the first utterance (lazy init, page faults).
        warm = audio.get(items[0])[:SAMPLE_RATE]
        engine.decode(warm)
        info = {"model_files": getattr(engine, "model_files", None)}
        info["blank_penalty"] = getattr(engine, "blank_penalty", None)
        send({"op": "ready", "baseline_rss_kb": baseline, "load_s": load_s, "info": info})
        for line in sys.stdin:
            msg = json.loads(line)
            if msg["op"] == "decode":
                send({"op": "result", **engine.decode(audio.get(items[msg["i"]]))})
            elif msg["op"] == "finish":
                peak = _rss_peak_kb()  # before the untimed checks allocate anything
                checks = (
                    [engine.checks(audio.get(it)) for it in items] if system != POCKETSPHINX else []
                )
                send({"op": "done", "peak_rss_kb": peak, "checks": checks})
                return 0
    except Exception:  # report to the parent instead of dying silently
        send({"op": "error", "message": traceback.format_exc()})
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# Parent side: drive the workers in lock-step
# ------------------------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    pass


class Worker:
    def __init__(self, system: str, job_path: Path) -> None:
        self.system = system
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--job"]
        self.proc = subprocess.Popen(
            [*cmd, str(job_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=REPO_ROOT,
        )
        self.ready = self._recv("ready")

    def _recv(self, op: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            raise WorkerError(f"{self.system} worker exited (rc {rc}) without answering")
        msg = json.loads(line)
        if msg["op"] == "error":
            self.proc.wait()
            raise WorkerError(f"{self.system} worker failed:\n{msg['message']}")
        if msg["op"] != op:
            raise WorkerError(f"{self.system} worker: expected {op!r}, got {msg['op']!r}")
        return msg

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def decode(self, i: int) -> dict[str, Any]:
        self._send({"op": "decode", "i": i})
        return self._recv("result")

    def finish(self) -> dict[str, Any]:
        self._send({"op": "finish"})
        out = self._recv("done")
        self.proc.wait()
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class UttResult:
    item: Item
    hyp: dict[str, str] = field(default_factory=dict)
    secs: dict[str, float] = field(default_factory=dict)
    chunks_ms: dict[str, list[float]] = field(default_factory=dict)
    final_ms: dict[str, float] = field(default_factory=dict)
    checks: dict[str, dict[str, str]] = field(default_factory=dict)


def run_workers(
    items: Sequence[Item], systems: Sequence[str], job_path: Path
) -> tuple[list[UttResult], dict[str, dict[str, Any]]]:
    """Start one worker per system (one after another), decode every utterance with each in a
    rotating order, then collect memory and the untimed checks."""
    from tqdm import tqdm

    workers: dict[str, Worker] = {}
    try:
        for s in systems:
            log.info("starting %s worker", s)
            workers[s] = Worker(s, job_path)
        results = [UttResult(it) for it in items]
        for i, r in enumerate(tqdm(results, desc="decoding", unit="utt", dynamic_ncols=True)):
            k = i % len(systems)
            for s in [*systems[k:], *systems[:k]]:
                out = workers[s].decode(i)
                r.hyp[s], r.secs[s] = out["hyp"], out["secs"]
                if "chunks_ms" in out:
                    r.chunks_ms[s] = out["chunks_ms"]
                if "final_ms" in out:
                    r.final_ms[s] = out["final_ms"]
                if out.get("num_finals", 1) > 1:
                    log.warning("%s: %s gave %d final results", r.item.id, s, out["num_finals"])
        info: dict[str, dict[str, Any]] = {}
        for s in systems:
            log.info("%s: memory and untimed checks", s)
            done = workers[s].finish()
            ready = workers[s].ready
            for r, c in zip(results, done["checks"], strict=False):
                r.checks[s] = c
            info[s] = {
                "baseline_rss_mb": ready["baseline_rss_kb"] / 1024,
                "peak_rss_mb": done["peak_rss_kb"] / 1024,
                "growth_mb": (done["peak_rss_kb"] - ready["baseline_rss_kb"]) / 1024,
                "load_s": ready["load_s"],
                **{k: v for k, v in ready["info"].items() if v is not None},
            }
        return results, info
    finally:
        for w in workers.values():
            w.kill()


# ------------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------------


def _percentiles(xs: Sequence[float]) -> dict[str, float | int | None]:
    import numpy as np

    if not xs:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    a = np.asarray(xs, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def summarize(results: Sequence[UttResult], systems: Sequence[str]) -> dict[str, Any]:
    """WER, RTF and latency percentiles per system over ``results``; ratios to pocketsphinx."""
    from edgeasr.corpus.text import normalize_text
    from edgeasr.decode import word_error_rate

    refs = [r.item.ref for r in results]
    audio = sum(r.item.duration for r in results)
    out: dict[str, Any] = {
        "num_utts": len(results),
        "num_ref_words": sum(len(x.split()) for x in refs),
        "audio_s": round(audio, 3),
    }
    for s in systems:
        secs = sum(r.secs[s] for r in results)
        chunks = [c for r in results for c in r.chunks_ms.get(s, [])]
        finals = [r.final_ms[s] for r in results if s in r.final_ms]
        out[s] = {
            "wer": word_error_rate(refs, [normalize_text(r.hyp[s]) for r in results]),
            "proc_s": round(secs, 4),
            "rtf": secs / audio if audio > 0 else None,
            "chunk_ms": _percentiles(chunks),
            "end_of_input_ms": _percentiles(finals),
        }
    ps = out.get(POCKETSPHINX, {}).get("rtf")
    for s in systems:
        rtf = out[s]["rtf"]
        out[s]["speed_vs_pocketsphinx"] = ps / rtf if ps and rtf else None
    if FP32 in systems and INT8 in systems and out[INT8]["rtf"]:
        out["int8_speedup_vs_fp32"] = out[FP32]["rtf"] / out[INT8]["rtf"]
        w32, w8 = out[FP32]["wer"], out[INT8]["wer"]
        out["int8_wer_rel_diff"] = (w8 - w32) / w32 if w32 else None
    return out


def _by(results: Sequence[UttResult], key: Any) -> dict[str, list[UttResult]]:
    groups: dict[str, list[UttResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return dict(groups)


def _agreement(results: Sequence[UttResult], a: Any, b: Any, limit: int = 10) -> dict[str, Any]:
    """How many utterances give identical strings under ``a`` and ``b`` (and a few that don't)."""
    same, diffs = 0, []
    for r in results:
        x, y = a(r), b(r)
        if x == y:
            same += 1
        elif len(diffs) < limit:
            diffs.append({"id": r.item.id, "a": x, "b": y})
    return {"identical": same, "total": len(results), "examples": diffs}


def consistency(results: Sequence[UttResult], systems: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"streaming_vs_offline": {}}
    for s in EDGEASR_SYSTEMS:
        if s in systems:
            out["streaming_vs_offline"][s] = _agreement(
                results, lambda r, s=s: r.hyp[s], lambda r, s=s: r.checks[s]["offline"]
            )
    if TORCH in systems and FP32 in systems:
        greedy = {}
        for split, rs in _by(results, lambda r: r.item.split).items():
            greedy[split] = _agreement(
                rs, lambda r: r.checks[TORCH]["greedy"], lambda r: r.checks[FP32]["greedy"]
            )
        greedy["all"] = _agreement(
            results, lambda r: r.checks[TORCH]["greedy"], lambda r: r.checks[FP32]["greedy"]
        )
        out["greedy_torch_vs_onnx_fp32"] = greedy
        out["streaming_torch_vs_onnx_fp32"] = _agreement(
            results, lambda r: r.hyp[TORCH], lambda r: r.hyp[FP32]
        )
    if FP32 in systems and INT8 in systems:
        out["streaming_onnx_fp32_vs_int8"] = _agreement(
            results, lambda r: r.hyp[FP32], lambda r: r.hyp[INT8]
        )
    return out


# ------------------------------------------------------------------------------------------------
# Bars
# ------------------------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "**N/A**" if ok is None else ("**PASS**" if ok else "**FAIL**")


def bars(data: dict[str, Any], systems: Sequence[str], threads: int) -> list[dict[str, Any]]:
    """Each bar from the issue with its verdict and the measured values behind it."""
    out: list[dict[str, Any]] = []
    overall, splits, checks = data["overall"], data["splits"], data["consistency"]

    for s, agr in checks["streaming_vs_offline"].items():
        ok = agr["identical"] == agr["total"]
        why = "" if ok or s != INT8 else " (dynamic int8 quantisation scales each chunk itself)"
        out.append(
            {
                "bar": f"Streaming and offline decoding give the same transcript ({s})",
                "pass": ok,
                "measured": f"{agr['identical']}/{agr['total']} utterances identical{why}",
            }
        )

    if FP32 in systems and INT8 in systems:
        pooled = [("all splits", overall)] if len(splits) > 1 else []
        for name, summ in [*splits.items(), *pooled]:
            w32, w8, rel = summ[FP32]["wer"], summ[INT8]["wer"], summ.get("int8_wer_rel_diff")
            out.append(
                {
                    "bar": f"int8 WER within 5% relative of fp32 ({name})",
                    "pass": w8 <= (1 + INT8_WER_REL_BAR) * w32,
                    "measured": f"fp32 {pct(w32, 2)}, int8 {pct(w8, 2)}, "
                    f"relative {'–' if rel is None else f'{100 * rel:+.1f}%'}",
                }
            )

    if INT8 in systems:
        rtf = overall[INT8]["rtf"]
        out.append(
            {
                "bar": f"int8 RTF ≤ {RTF_BAR} on one thread of this machine",
                "pass": (rtf is not None and rtf <= RTF_BAR) if threads == 1 else None,
                "measured": f"RTF {num(rtf, 4)} on {threads} thread(s)",
            }
        )
        if POCKETSPHINX in systems:
            ps = overall[POCKETSPHINX]["rtf"]
            out.append(
                {
                    "bar": "int8 faster than pocketsphinx on the same audio",
                    "pass": rtf is not None and ps is not None and rtf < ps,
                    "measured": f"int8 RTF {num(rtf, 4)} vs pocketsphinx {num(ps, 4)} "
                    f"({num(overall[INT8]['speed_vs_pocketsphinx'], 2)}× faster)",
                }
            )

    greedy = checks.get("greedy_torch_vs_onnx_fp32")
    if greedy:
        split = PARITY_SPLIT if PARITY_SPLIT in greedy else "all"
        agr = greedy[split]
        where = f"{split} split" if split != "all" else "all utterances (no test split given)"
        out.append(
            {
                "bar": f"Export parity: identical greedy transcripts torch vs onnx fp32 ({where})",
                "pass": agr["identical"] == agr["total"],
                "measured": f"{agr['identical']}/{agr['total']} utterances identical",
            }
        )
    return out


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _ms(stats: dict[str, Any], key: str) -> str:
    return num(stats.get(key), 1)


def main_table(data: dict[str, Any], systems: Sequence[str], split_names: Sequence[str]) -> str:
    overall, mem = data["overall"], data["memory"]
    rows = []
    for s in systems:
        o = overall[s]
        rows.append(
            [
                LABELS[s],
                num(o["rtf"], 4),
                num(o["speed_vs_pocketsphinx"], 2) + "×" if o["speed_vs_pocketsphinx"] else "–",
                _ms(o["chunk_ms"], "p50"),
                _ms(o["chunk_ms"], "p99"),
                _ms(o["end_of_input_ms"], "p50"),
                f"{mem[s]['peak_rss_mb']:.0f}",
                f"{mem[s]['growth_mb']:.0f}",
                *[pct(data["splits"][n][s]["wer"]) for n in split_names],
            ]
        )
    return markdown_table(
        [
            "system",
            "RTF",
            "speed vs pocketsphinx",
            "chunk p50 ms",
            "chunk p99 ms",
            "after end of audio p50 ms",
            "peak RSS MB",
            "model + decoding MB",
            *[f"WER {n}" for n in split_names],
        ],
        rows,
    )


def latency_table(data: dict[str, Any], systems: Sequence[str]) -> str:
    rows = []
    for s in systems:
        o = data["overall"][s]
        c, f = o["chunk_ms"], o["end_of_input_ms"]
        rows.append(
            [
                LABELS[s],
                c["n"],
                _ms(c, "p50"),
                _ms(c, "p90"),
                _ms(c, "p99"),
                _ms(c, "max"),
                _ms(f, "p50"),
                _ms(f, "p99"),
                _ms(f, "max"),
            ]
        )
    return markdown_table(
        [
            "system",
            "chunks",
            "chunk p50",
            "chunk p90",
            "chunk p99",
            "chunk max",
            "end p50",
            "end p99",
            "end max",
        ],
        rows,
    )


def memory_table(data: dict[str, Any], systems: Sequence[str]) -> str:
    rows = []
    for s in systems:
        m = data["memory"][s]
        rows.append(
            [
                LABELS[s],
                f"{m['baseline_rss_mb']:.0f}",
                f"{m['peak_rss_mb']:.0f}",
                f"{m['growth_mb']:.0f}",
                f"{m['load_s']:.2f}",
            ]
        )
    return markdown_table(
        ["system", "RSS after imports MB", "peak RSS MB", "model + decoding MB", "load s"], rows
    )


def split_table(data: dict[str, Any], systems: Sequence[str]) -> str:
    rows = []
    for name, summ in data["splits"].items():
        groups = [("all", summ)] + sorted(summ["by_group"].items())
        for g, gs in groups:
            rows.append(
                [
                    name,
                    g,
                    gs["num_utts"],
                    f"{gs['audio_s'] / 60:.1f}",
                    *[pct(gs[s]["wer"]) for s in systems],
                    *[num(gs[s]["rtf"], 4) for s in systems],
                ]
            )
    return markdown_table(
        [
            "split",
            "engine",
            "utts",
            "audio min",
            *[f"WER {s}" for s in systems],
            *[f"RTF {s}" for s in systems],
        ],
        rows,
        align="ll" + "r" * (2 + 2 * len(systems)),
    )


def check_table(data: dict[str, Any]) -> str:
    c = data["consistency"]
    rows = []
    for s, agr in c["streaming_vs_offline"].items():
        rows.append([f"{s}: streaming (pieces) vs whole buffer", agr["identical"], agr["total"]])
    for split, agr in c.get("greedy_torch_vs_onnx_fp32", {}).items():
        rows.append([f"greedy torch vs onnx fp32 ({split})", agr["identical"], agr["total"]])
    for key, label in [
        ("streaming_torch_vs_onnx_fp32", "streaming beam torch vs onnx fp32"),
        ("streaming_onnx_fp32_vs_int8", "streaming beam onnx fp32 vs int8"),
    ]:
        if key in c:
            rows.append([label, c[key]["identical"], c[key]["total"]])
    return markdown_table(["check (transcripts identical)", "identical", "utterances"], rows)


def plot(results: Sequence[UttResult], systems: Sequence[str], chunk_ms: int, path: Path) -> None:
    """Left: CDF of per-chunk compute latency; right: CDF of per-utterance RTF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {TORCH: "tab:blue", FP32: "tab:green", INT8: "tab:red", POCKETSPHINX: "tab:orange"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in systems:
        xs = np.sort([c for r in results for c in r.chunks_ms.get(s, [])])
        if xs.size:
            ax1.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=s, color=colors[s])
        rtf = np.sort([r.secs[s] / r.item.duration for r in results if r.item.duration > 0])
        if rtf.size:
            ax2.plot(rtf, np.arange(1, rtf.size + 1) / rtf.size, label=s, color=colors[s])
    ax1.axvline(chunk_ms, color="grey", ls="--", lw=1, label=f"real-time limit ({chunk_ms} ms)")
    ax1.set_xscale("log")
    ax1.set_xlabel(f"compute per {chunk_ms} ms audio chunk (ms, log)")
    ax1.set_ylabel("fraction of chunks ≤ x")
    ax1.set_title("Per-chunk latency (streaming systems)", fontsize=10)
    ax2.axvline(RTF_BAR, color="grey", ls="--", lw=1, label=f"RTF bar {RTF_BAR}")
    ax2.set_xscale("log")
    ax2.set_xlabel("real-time factor per utterance (log)")
    ax2.set_ylabel("fraction of utterances ≤ x")
    ax2.set_title("Per-utterance RTF (all systems)", fontsize=10)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_page(
    data: dict[str, Any],
    results: Sequence[UttResult],
    systems: Sequence[str],
    args: argparse.Namespace,
    command: str,
) -> ResultsPage:
    page = ResultsPage(
        name=args.name,
        title="Runtime: torch vs onnx fp32 vs onnx int8, with pocketsphinx on the same audio",
        command=command,
    )
    for pkg in ("onnxruntime", "pocketsphinx"):
        page.machine[pkg] = pkg_version(pkg)
    split_names = list(data["splits"])
    source = (
        f"{len(args.wavs)} audio files scored against `{args.refs}`"
        if args.wavs
        else f"synthetic splits {', '.join(f'`{s}`' for s in split_names)} of `{args.corpus}`"
    )
    cap = (
        f" (at most {args.max_utts} utterances per split, evenly strided)"
        if args.max_utts
        else " (all utterances)"
    )
    if data.get("missing_splits"):
        source += " (not found, skipped: " + ", ".join(data["missing_splits"]) + ")"
    o = data["overall"]
    page.add(
        f"Model: `{args.model}`, exported to ONNX fp32 and int8 by this run. Audio: {source}{cap}, "
        f"{o['num_utts']} utterances, {o['audio_s'] / 60:.1f} min. Every system decodes the very "
        f"same samples on {args.threads} thread(s), beam {args.beam}, audio fed in "
        f"{args.chunk_ms} ms pieces (pocketsphinx: whole utterance)."
        + second_pass_note(args.model, args.one_pass)
    )
    page.add(
        "## Bars\n\n"
        + "\n".join(f"- {_verdict(b['pass'])} {b['bar']}: {b['measured']}" for b in data["bars"])
    )
    page.add(
        "## Speed, latency and memory (all utterances)\n\n" + main_table(data, systems, split_names)
    )
    page.add(
        "RTF = compute time / audio duration (lower is faster); speed vs pocketsphinx = its RTF / "
        "the system's RTF, measured in this run. "
        + (
            f"int8 is {o['int8_speedup_vs_fp32']:.2f}× faster than fp32. "
            if o.get("int8_speedup_vs_fp32")
            else ""
        )
        + "Chunk = one "
        f"{args.chunk_ms} ms piece of audio in, decoding up to date out; after end of audio = "
        "the time from the last sample to the final transcript (for pocketsphinx, which decodes "
        "the whole utterance at the end, its entire compute time)."
    )
    page.add("### Latency detail (ms)\n\n" + latency_table(data, systems))
    page.add("### Memory\n\n" + memory_table(data, systems))
    page.add("## WER and RTF per split and TTS engine\n\n" + split_table(data, systems))
    page.add("## Consistency checks (untimed)\n\n" + check_table(data))
    page.add(f"![Per-chunk latency and per-utterance RTF]({args.name}.png)")
    page.add(
        "## Method\n\n"
        + "\n".join(
            [
                "- **Systems.** `torch`: the training-side `Transcriber.decode_streaming` (beam "
                "search, features, encoder state and beam carried between pieces). `onnx-fp32`/"
                "`onnx-int8`: the device `Recognizer` (onnxruntime, no torch) with an "
                "`EndpointConfig` that never fires mid-utterance, so each utterance yields exactly "
                "one `final_end`, whose text is scored; its time includes partial results, the "
                "end-of-query classifier if the package ships one, and the final N-best "
                "lattice. `pocketsphinx`: its bundled US-English model decoding the whole "
                "utterance, as in the accuracy benchmark (batch decoding, which favours it "
                "against streaming systems).",
                "- **Timing.** `time.perf_counter` around each `accept_waveform` (onnx), and the "
                "end-of-input call; RTF sums every call of an utterance including stream "
                "creation. Fbank extraction is included for every system, loading audio from "
                "disk for none. torch's per-chunk times are read without changing its code: a "
                "`StreamingFbank` subclass stamps the clock each time `decode_streaming` feeds it "
                "a piece, so a chunk's time runs from one piece to the next.",
                "- **Isolation.** Each system runs in its own process (this script re-invoked "
                "with `--worker`); all four stay alive and the parent hands them one utterance "
                "at a time, rotating which goes first, and only one computes at a time, so "
                "machine-load drift hits all systems alike. Each worker is warmed up on one "
                "second of audio before timing. Thread pools: "
                f"`OMP/MKL/OPENBLAS_NUM_THREADS={args.threads}`, `torch.set_num_threads"
                f"({args.threads})`, onnxruntime `intra_op_num_threads={args.threads}`; "
                "pocketsphinx is single-threaded.",
                "- **Memory.** Resident set size of each worker: after importing its libraries "
                "(before loading the model), and the peak (Linux `VmHWM`, which unlike "
                "`ru_maxrss` does not inherit the parent's size across `exec`) at the end of the "
                "timed run; model + decoding = peak − after imports. Read before the untimed "
                "checks.",
                "- **Checks.** Streaming vs offline: the same system on the whole buffer at once "
                "(torch: beam search on whole-utterance fbank; onnx: one `accept_waveform` with "
                "all samples). Export parity: greedy search with the torch model "
                "(`Transcriber(method='greedy').decode_features`) vs greedy search over the onnx "
                "fp32 encoder on the whole utterance (fbank trimmed to a multiple of the "
                "subsampling factor), same blank penalty. int8 graphs use onnxruntime dynamic "
                "quantisation, whose activation scales are computed per call, so int8 results "
                "may depend on how audio is cut into chunks.",
                "- **WER** is corpus-level after the same text normalisation for references and "
                "hypotheses. The int8 WER bar is read one-sided: int8 WER ≤ 1.05 × fp32 WER.",
            ]
        )
    )
    examples = {}
    for split, rs in _by(results, lambda r: r.item.split).items():
        examples[split] = [
            {"id": r.item.id, "ref": r.item.ref, **{f"hyp_{s}": r.hyp[s] for s in systems}}
            for r in even_subset(rs, 5)
        ]
    page.data = {
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("worker", "job")
        }
        | {"wavs": [str(w) for w in args.wavs or []]},
        **data,
        "examples": examples,
    }
    return page


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = benchmark_parser(__doc__, "runtime", package_beam=True)
    p.add_argument(
        "--splits", nargs="+", default=["test", "test_xengine"], help="synthetic splits to run"
    )
    p.add_argument(
        "--wavs",
        type=Path,
        nargs="+",
        default=None,
        help="benchmark these audio files instead of the corpus (needs --refs)",
    )
    p.add_argument("--refs", type=Path, default=None, help="TSV with file, text [, voice]")
    p.add_argument(
        "--max-utts", type=int, default=0, help="cap per split (evenly strided subset); 0 = all"
    )
    p.add_argument("--chunk-ms", type=int, default=160, help="audio piece fed per call")
    p.add_argument("--no-pocketsphinx", action="store_true", help="leave the pocketsphinx peer out")
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.wavs and not args.refs:
        p.error("--wavs needs --refs")
    if args.chunk_ms <= 0:
        p.error("--chunk-ms must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.job)
    limit_threads(args.threads)  # before numpy/torch load; the workers inherit the environment
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import importlib.util

    model_dir = _resolve(args.model)
    if not (model_dir / "manifest.json").is_file():
        log.error("model package not found at %s (pass --model DIR)", model_dir)
        return 2
    args.beam = package_beam(model_dir, args.beam)
    systems = list(SYSTEMS)
    if args.no_pocketsphinx or importlib.util.find_spec("pocketsphinx") is None:
        if not args.no_pocketsphinx:
            log.warning("pocketsphinx is not installed; running without the peer")
        systems.remove(POCKETSPHINX)

    if args.wavs:
        pairs = wav_items(args.wavs, args.refs, args.max_utts)
    else:
        pairs = corpus_items(_resolve(args.corpus), args.splits, args.max_utts)
    if not pairs:
        log.error("no utterances found (corpus %s / --wavs); nothing to do", args.corpus)
        return 2

    from edgeasr.export import export_model_dir

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeasr-runtime-bench-") as tmp:
        tmpd = Path(tmp)
        items = stage_audio(pairs, tmpd / "audio.f32")
        log.info("exporting %s to ONNX (fp32 + int8)", model_dir)
        onnx_dir = export_model_dir(model_dir, tmpd / "onnx", int8=True)
        job = {
            "model_dir": str(model_dir),
            "onnx_dir": str(onnx_dir),
            "audio": str(tmpd / "audio.f32"),
            "items": [{"offset": it.offset, "num_samples": it.num_samples} for it in items],
            "chunk_ms": args.chunk_ms,
            "step": max(1, SAMPLE_RATE * args.chunk_ms // 1000),
            "beam": args.beam,
            "one_pass": args.one_pass,
            "threads": args.threads,
        }
        job_path = tmpd / "job.json"
        job_path.write_text(json.dumps(job))
        try:
            results, memory = run_workers(items, systems, job_path)
        except WorkerError as exc:
            log.error("%s", exc)
            return 1
    wall = time.perf_counter() - t_start

    data: dict[str, Any] = {"systems": systems, "labels": {s: LABELS[s] for s in systems}}
    found = {it.split for it in items}
    data["missing_splits"] = [] if args.wavs else [s for s in args.splits if s not in found]
    data["overall"] = summarize(results, systems)
    splits: dict[str, Any] = {}
    for split, rs in _by(results, lambda r: r.item.split).items():
        splits[split] = summarize(rs, systems)
        splits[split]["by_group"] = {
            g: summarize(gr, systems) for g, gr in sorted(_by(rs, lambda r: r.item.group).items())
        }
    data["splits"] = splits
    data["memory"] = memory
    data["consistency"] = consistency(results, systems)
    data["bars"] = bars(data, systems, args.threads)
    data["wall_s"] = round(wall, 1)

    command = command_line() if argv is None else command_line([__file__, *argv])
    page = build_page(data, results, systems, args, command)
    md, js = page.write(args.out_dir)
    png = args.out_dir / f"{args.name}.png"
    plot(results, systems, args.chunk_ms, png)
    print(main_table(data, systems, list(splits)))
    print()
    for b in data["bars"]:
        print(f"{_verdict(b['pass']).strip('*')}  {b['bar']}: {b['measured']}")
    print(f"\nwrote {md}, {js}, {png} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
