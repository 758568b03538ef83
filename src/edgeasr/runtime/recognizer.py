"""Streaming recognition on the device: a Recognizer holds the model, streams hold the state.

Only numpy, onnxruntime, kaldi-native-fbank and sentencepiece are imported (a test holds the
runtime to that), so a device needs no training framework.

Usage::

    rec = Recognizer("models/edgeasr-small-en/onnx", variant="int8")
    stream = rec.create_stream()
    stream.set_context(["jonathan", "kitchen lights"])
    for piece in microphone():              # any size, 10 ms to seconds
        for event in stream.accept_waveform(piece):
            print(event.kind, event.time_s, event.text)
    stream.input_finished()

Events carry the audio time at which they fired (end of the encoder frame that triggered them),
which does not depend on how the audio was cut into pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeasr.audio import AudioError, validate_samples
from edgeasr.features import FbankConfig, StreamingFbank
from edgeasr.lattice import Lattice, build_lattice
from edgeasr.runtime.endpoint import EndOfQueryClassifier, EndpointConfig, Endpointer
from edgeasr.runtime.onnx_model import EncoderState, OnnxTransducer, _session
from edgeasr.runtime.package import RuntimePackage, load_runtime_package
from edgeasr.search.beam import BeamState, Hypothesis, modified_beam_search, nbest, tuned_beam
from edgeasr.search.beam import context as predictor_context
from edgeasr.search.context import ContextGraph
from edgeasr.search.pointer import PointerTrie
from edgeasr.search.rescore import Rescorer
from edgeasr.tokenizer import Tokenizer

if TYPE_CHECKING:
    from edgeasr.runtime.sparse_model import SparseTransducer

EVENT_KINDS = ("partial", "speculative_end", "final_end", "reset")


@dataclass
class Event:
    """Something downstream should act on.

    ``partial``: the best transcript changed. ``speculative_end``: probably the end of the query
    (start work now; lattice attached). ``final_end``: the end (lattice attached; the stream moves
    on to the next utterance). ``reset``: the transcript changed after ``speculative_end``; drop
    what was started from it.
    """

    kind: str
    time_s: float
    text: str
    utterance: int
    lattice: Lattice | None = None


@dataclass
class FrameInfo:
    """What the end-pointers saw at one encoder frame (recorded when ``Stream.frame_log`` is a
    list): the material for training the end-of-query classifier and tuning thresholds."""

    frame: int
    text: str
    trailing_s: float
    utterance_s: float
    has_speech: bool
    enc: np.ndarray
    dec: np.ndarray
    p_end: float | None


@dataclass
class _Utterance:
    index: int
    start_frame: int
    beam: BeamState
    endpointer: Endpointer
    graph: ContextGraph | None = None
    # the CTC head's log-probs of this utterance's frames, for the second pass
    ctc: list[np.ndarray] = field(default_factory=list)
    # the text the last standing speculative_end handed downstream (None once reset)
    handed: str | None = None


class Recognizer:
    """Loads a model once; streams share it (the graphs are stateless).

    ``package`` is a runtime package directory (ONNX graphs; ``variant`` fp32 or int8) or a
    packed model file from ``edgeasr pack`` (numpy kernels; ``variant`` auto, the default, skips
    zero weights in the matrices sparse enough for it to pay; sparse everywhere; dense nowhere).
    A packed file carries no end-of-query classifier: the rule end-pointer
    runs unless ``endpoint`` says otherwise.

    Context phrases (``create_stream(context=...)``) bias the search by shallow fusion with a
    per-token ``context_boost`` (0 turns it off) and, when the package has a trained neural
    biasing module and ``neural_biasing`` is on, by its pointer generator; the two combine if
    both are set. ``gate_offset`` shifts the pointer's gate (negative: fewer names inserted
    where none was said, and fewer recalled). Left as None, each takes the value chosen on dev
    for the biasing that is active (see the comments below).

    ``rescorer`` is the second pass (:mod:`edgeasr.search.rescore`): at ``speculative_end`` and
    ``final_end`` the beam is reranked with the CTC head's log-probs of the utterance and a word
    bonus, and those events (and their lattices) carry the reranked result; ``partial`` events
    stay the first pass. Left as None it takes the weights tuned into the package, if its encoder
    outputs the CTC head (a packed file's does not: the second pass is then off). ``beam`` left
    as None is the one those weights were tuned at (4 for an untuned package).
    """

    def __init__(
        self,
        package: str | Path | RuntimePackage,
        variant: str = "fp32",
        beam: int | None = None,
        num_threads: int = 1,
        endpoint: EndpointConfig | None = None,
        blank_penalty: float | None = None,
        context_boost: float | None = None,
        nbest: int = 4,
        neural_biasing: bool = True,
        gate_offset: float | None = None,
        rescorer: Rescorer | None = None,
    ) -> None:
        self.package: RuntimePackage | None = None
        self.model: OnnxTransducer | SparseTransducer
        if not isinstance(package, RuntimePackage) and Path(package).is_file():
            # numba and zstandard only for packed files: the ONNX path stays this lean
            from edgeasr.compress.packed import read_packed
            from edgeasr.runtime.sparse_model import SparseTransducer

            kernel = "auto" if variant == "fp32" else variant
            if kernel not in ("auto", "sparse", "dense"):
                raise ValueError(
                    f"a packed model runs as 'auto', 'sparse' or 'dense', not {variant!r}"
                )
            packed = read_packed(package)
            manifest = packed.meta
            self.model = SparseTransducer(packed, kernel)
            self.tokenizer = Tokenizer(packed.tokenizer)
            eoq = None
        else:
            self.package = (
                package if isinstance(package, RuntimePackage) else load_runtime_package(package)
            )
            manifest = self.package.manifest
            self.model = OnnxTransducer(self.package, variant, num_threads)
            self.tokenizer = Tokenizer.load(self.package.tokenizer_path)
            eoq = manifest.get("endpoint")
        self.fbank = FbankConfig(**manifest["fbank"])
        self.frame_shift_s = self.model.subsampling * self.fbank.frame_shift_ms / 1000.0
        self.beam = tuned_beam(manifest.get("decoding", {})) if beam is None else beam
        self.nbest = nbest
        # Settings tuned with the classifier ship with it; an explicit config always wins.
        self.endpoint = endpoint or (EndpointConfig(**eoq["config"]) if eoq else EndpointConfig())
        tuned = float(manifest.get("decoding", {}).get("blank_penalty", 0.0))
        self.blank_penalty = tuned if blank_penalty is None else float(blank_penalty)
        has_ctc = bool(getattr(self.model, "has_ctc", False))
        if rescorer is None:
            rescorer = Rescorer.from_decoding(manifest.get("decoding", {})).for_model(has_ctc)
        elif rescorer.ctc_weight and not has_ctc:
            raise ValueError("CTC rescoring needs a runtime package whose encoder outputs CTC")
        self.rescorer = rescorer
        self.neural_biasing = bool(neural_biasing and getattr(self.model, "has_biaser", False))
        # Per-token boost of context phrases. 0.5 was chosen on dev with 100-name contact lists
        # (benchmarks/biasing.py): stronger boosts recall more names but insert them elsewhere.
        # With the neural module, shallow fusion is off by default: on top of it, even 0.5
        # inserted names everywhere (a probe while building it: +7 points of no-name WER).
        default_boost = 0.0 if self.neural_biasing else 0.5
        self.context_boost = default_boost if context_boost is None else float(context_boost)
        # -2 was chosen on dev the same way (benchmarks/biasing.py --neural).
        self.gate_offset = -2.0 if gate_offset is None else float(gate_offset)
        self.classifier = (
            EndOfQueryClassifier(_session(self.package.path / eoq["file"], num_threads))
            if eoq and self.package is not None
            else None
        )

    def create_stream(self, context: list[str] | None = None) -> Stream:
        stream = Stream(self)
        if context:
            stream.set_context(context)
        return stream

    def context_graph(self, phrases: list[str]) -> ContextGraph | None:
        """Shallow fusion's graph for ``phrases`` (None without phrases or with boost 0)."""
        if not phrases or not self.context_boost:
            return None
        return ContextGraph.from_phrases(phrases, self.tokenizer, boost=self.context_boost)

    def pointer_trie(self, phrases: list[str]) -> PointerTrie | None:
        """Neural biasing's prefix tree for ``phrases`` (None without phrases or a biaser)."""
        if not phrases or not self.neural_biasing:
            return None
        return PointerTrie.from_phrases(phrases, self.tokenizer)


class Stream:
    """One audio stream: its own features, encoder state, beam, context and end-pointers."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.rec = recognizer
        self._graph: ContextGraph | None = None
        self._pointer: PointerTrie | None = None
        self.frame_log: list[FrameInfo] | None = None
        self.reset()

    # -- public API -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all audio and results (the context phrases stay)."""
        self._fbank = StreamingFbank(self.rec.fbank)
        self._pending = np.zeros((0, self.rec.fbank.num_mel_bins), dtype=np.float32)
        self._enc_state: EncoderState | None = None
        self._frame = 0
        self._finished = False
        self._utt = self._new_utterance(0)

    def set_context(self, phrases: list[str]) -> None:
        """Bias recognition towards ``phrases`` (contact names, appliances...).

        Takes effect at once if the current utterance has not decoded anything yet, otherwise
        from the next utterance, so a hypothesis is never scored against two different graphs.
        """
        phrases = [p for p in phrases if p.strip()]
        self._graph = self.rec.context_graph(phrases)
        self._pointer = self.rec.pointer_trie(phrases)
        if not self._utt.beam.hyps[0].tokens and len(self._utt.beam.hyps) == 1:
            self._utt = self._new_utterance(self._utt.index, self._utt.start_frame)

    def accept_waveform(self, samples: np.ndarray, sample_rate: int = 16000) -> list[Event]:
        """Feed 16 kHz mono samples (float in [-1, 1] or int16), any length; returns events."""
        if self._finished:
            raise RuntimeError("stream: input_finished() was called; reset() to reuse it")
        arr = np.asarray(samples)
        if arr.size == 0:
            return []
        try:
            arr = validate_samples(arr, sample_rate, "stream input")
        except AudioError as exc:
            if arr.size >= sample_rate // 100 or "shorter than" not in str(exc):
                raise
            arr = np.asarray(samples, dtype=np.float32)  # a short piece is fine in a stream
            if not np.all(np.isfinite(arr)):
                raise AudioError("stream input: contains NaN or infinite samples") from None
        self._fbank.accept_waveform(arr)
        return self._advance()

    def input_finished(self) -> list[Event]:
        """No more audio: decode what is left and close the utterance with ``final_end``."""
        if self._finished:
            return []
        self._fbank.input_finished()
        events = self._advance()
        self._finished = True
        if self._utt.beam.hyps[0].tokens or self._utt.endpointer.speculated_text is not None:
            events += self._finish(self._time(self._frame))
        return events

    @property
    def text(self) -> str:
        """Best transcript of the current utterance so far (the partial result)."""
        return self._utt.endpointer.best_text

    def nbest(self) -> list[Hypothesis]:
        return nbest(self._utt.beam)

    def lattice(self) -> Lattice:
        """Word lattice of the current utterance's N-best, with absolute times, best first in
        the search's ranking (so ``nbest[0]`` is the transcript the stream reports)."""
        n = self.rec.nbest
        hyps, ranks = self._ranked()
        hyps, ranks = hyps[:n], (ranks[:n] if ranks is not None else None)
        offset = self._utt.start_frame
        shifted = [
            Hypothesis(h.tokens, h.log_prob, [f + offset for f in h.frames], h.scores) for h in hyps
        ]
        return build_lattice(
            shifted,
            self.rec.tokenizer,
            self.rec.frame_shift_s,
            prior=self.rec.model.prior,
            keep_order=True,  # the search's ranking (context boosts, second pass) included
            # confidences from the second pass' scores when it chose the order
            rank_scores=ranks if ranks is not None and len(ranks) > 1 else None,
        )

    def _ranked(self) -> tuple[list[Hypothesis], list[float] | None]:
        """The whole beam, best first: by the search, then by the second pass if it is on; with
        the second pass, also its posterior scores (None without), from one scoring of each."""
        hyps = nbest(self._utt.beam)
        rescorer = self.rec.rescorer
        if not rescorer.enabled or len(hyps) < 2:
            return hyps, None
        ctc = np.concatenate(self._utt.ctc) if self._utt.ctc else None
        tokenizer = self.rec.tokenizer
        pairs = rescorer.ranked(hyps, ctc, lambda toks: len(tokenizer.decode(toks).split()))
        return [h for h, _ in pairs], [s for _, s in pairs]

    # -- internals --------------------------------------------------------------------------

    def _new_utterance(
        self, index: int, start_frame: int | None = None, history: Sequence[int] = ()
    ) -> _Utterance:
        start = self._frame if start_frame is None else start_frame
        beam = BeamState(
            self.rec.model.context_size,
            context_graph=self._graph,
            history=history,
            pointer=self._pointer,
        )
        return _Utterance(index, start, beam, Endpointer(self.rec.endpoint), self._graph)

    def _advance(self) -> list[Event]:
        self._pending = np.concatenate([self._pending, self._fbank.pop_frames()])
        sub = self.rec.model.subsampling
        n = (len(self._pending) // sub) * sub
        if not n:
            return []
        events: list[Event] = []
        # One encoder frame per call: int8 graphs quantise activations per call, so a fixed call
        # size is what makes results independent of how the audio was cut into pieces (and the
        # per-call overhead is small next to search).
        need_ctc = bool(self.rec.rescorer.ctc_weight)
        for start in range(0, n, sub):
            block = self._pending[start : start + sub]
            if need_ctc:
                enc, ctc, self._enc_state = self.rec.model.encode_chunk_ctc(block, self._enc_state)
                self._utt.ctc.append(ctc)
            else:
                enc, self._enc_state = self.rec.model.encode_chunk(block, self._enc_state)
            events += self._step(enc)
        self._pending = self._pending[n:]
        return events

    def _time(self, frame: int) -> float:
        return round(frame * self.rec.frame_shift_s, 6)

    def _step(self, enc: np.ndarray) -> list[Event]:
        rec, utt = self.rec, self._utt
        modified_beam_search(
            rec.model,
            enc,
            rec.beam,
            utt.beam,
            rec.blank_penalty,
            context_graph=utt.graph,
            gate_offset=rec.gate_offset,
        )
        self._frame += 1
        best = nbest(utt.beam, 1)[0]
        text = rec.tokenizer.decode(best.tokens)
        last = utt.start_frame + (best.frames[-1] + 1 if best.frames else 0)
        trailing = (self._frame - last) * rec.frame_shift_s
        utterance_s = (self._frame - utt.start_frame) * rec.frame_shift_s
        speech = bool(best.tokens)
        p_end = dec = None
        if (rec.classifier is not None and speech) or self.frame_log is not None:
            ctx = predictor_context(best.tokens, rec.model.context_size)
            dec = rec.model.decoder(np.array([ctx], dtype=np.int64))
        if rec.classifier is not None and speech:
            p_end = float(rec.classifier(enc, dec, np.array([trailing]))[0])
        if self.frame_log is not None:
            self.frame_log.append(
                FrameInfo(self._frame, text, trailing, utterance_s, speech, enc[0], dec[0], p_end)
            )
        now = self._time(self._frame)
        return self._events(
            utt.endpointer.step(text, trailing, utterance_s, speech, p_end), now, text
        )

    def _events(self, kinds: list[str], now: float, text: str) -> list[Event]:
        """Events for the end-pointer's decisions at one frame (``text``: the first pass' best).

        ``speculative_end`` and ``final_end`` carry the lattice's first path, the second pass'
        choice when it is on; if that final text differs from what a standing speculative end
        handed downstream, a ``reset`` comes first, whether or not the first pass changed.
        """
        utt = self._utt
        events: list[Event] = []
        for kind in kinds:
            if kind == "final_end":
                lat = self.lattice()
                final = self._chosen(lat, text)
                if utt.handed is not None and final != utt.handed:
                    events.append(Event("reset", now, final, utt.index))
                events.append(self._close(now, final, lat))
            elif kind == "speculative_end":
                lat = self.lattice()
                utt.handed = self._chosen(lat, text)
                events.append(Event(kind, now, utt.handed, utt.index, lat))
            else:
                if kind == "reset":
                    utt.handed = None
                events.append(Event(kind, now, text, utt.index))
        return events

    def _chosen(self, lattice: Lattice, text: str) -> str:
        """The transcript an end event reports: the second pass' choice when it is on (the
        lattice's first path), else the first pass' best ``text``, which that path spells."""
        if self.rec.rescorer.enabled and lattice.nbest:
            return lattice.nbest[0].text
        return text

    def _close(self, now: float, text: str, lattice: Lattice) -> Event:
        """The ``final_end`` event of the current utterance (``text``: its transcript, the
        lattice's first path); the stream moves on to the next utterance."""
        utt = self._utt
        event = Event("final_end", now, text, utt.index, lattice)
        # The encoder state goes on across the boundary, so the predictor's context does too:
        # a fresh (blank) context on the frames just after a request made the model start a
        # phantom utterance there ("... a one minute timer" then "timer").
        said = nbest(utt.beam, 1)[0].tokens or utt.beam.history
        self._utt = self._new_utterance(utt.index + 1, history=said)
        return event

    def _finish(self, now: float) -> list[Event]:
        utt = self._utt
        text = self.rec.tokenizer.decode(nbest(utt.beam, 1)[0].tokens)
        return self._events(utt.endpointer.finish(text), now, text)


__all__ = ["EVENT_KINDS", "Event", "FrameInfo", "Recognizer", "Stream"]
