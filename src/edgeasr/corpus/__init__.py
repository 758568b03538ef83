"""Synthetic speech corpus: voice-assistant text, TTS voices, and the synthesis pipeline.

``text`` makes normalised utterances from templates, ``tts`` wraps the installed engines,
``augment`` degrades audio realistically, ``synth`` assigns voices to splits and writes FLAC +
lhotse manifests.
"""

from edgeasr.corpus.synth import (
    SPLITS,
    assign_voices,
    corpus_synth_command,
    synthesize_corpus,
)
from edgeasr.corpus.text import (
    HELD_OUT_NAMES,
    Utterance,
    generate_utterances,
    normalize_text,
)
from edgeasr.corpus.tts import TTSError, Voice, list_voices, synthesize

__all__ = [
    "HELD_OUT_NAMES",
    "SPLITS",
    "TTSError",
    "Utterance",
    "Voice",
    "assign_voices",
    "corpus_synth_command",
    "generate_utterances",
    "list_voices",
    "normalize_text",
    "synthesize",
    "synthesize_corpus",
]
