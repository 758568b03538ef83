"""Shared fixtures: a tiny synthetic corpus built once per test session with the real pipeline."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from edgeasr.corpus.synth import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(out, hours=0.02, seed=3, jobs=2, dev_size=6, test_size=6, test_xengine_size=4)
    return out


def make_untrained_package(out: Path, texts: list[str], vocab: int = 30) -> Path:
    """A tiny, untrained model package: enough to exercise loading, decoding and the CLI."""
    from edgeasr.model.checkpoint import save_package
    from edgeasr.model.config import ModelConfig
    from edgeasr.model.transducer import Transducer
    from edgeasr.tokenizer import train_tokenizer

    tok = train_tokenizer(texts * 20, vocab)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        encoder_dim=16,
        lstm_hidden=16,
        num_layers=1,
        predictor_dim=16,
        joiner_dim=16,
    )
    save_package(Transducer(cfg), tok, out)
    return out


@pytest.fixture(scope="session")
def tiny_base(tiny_corpus, tmp_path_factory) -> Path:
    """A tiny model trained for two steps on the tiny corpus: a base for fine-tuning tests."""
    from edgeasr.train.config import load_experiment
    from edgeasr.train.trainer import Trainer

    cfg = load_experiment(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    cfg.train.epochs, cfg.train.max_steps = 1, 2
    return Trainer(cfg, tiny_corpus, tmp_path_factory.mktemp("tiny-base")).fit()


@pytest.fixture(scope="session")
def tiny_updates(tiny_corpus, tmp_path_factory) -> Path:
    """The five update corpora (data/updates layout) with a handful of utterances each."""
    from edgeasr.corpus.updates import UpdateSizes, synthesize_updates

    out = tmp_path_factory.mktemp("updates")
    synthesize_updates(
        out,
        tiny_corpus,
        seed=3,
        sizes=UpdateSizes(train=4, dev=2, test=2, replay=2, replay_previous=1),
    )
    return out
