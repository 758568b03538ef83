"""Shared fixtures: a tiny synthetic corpus built once per test session with the real pipeline."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from edgeasr.corpus.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, hours=0.02, seed=3, jobs=2, dev_size=6, test_size=6,
                      test_xengine_size=4)
    return out
