"""Peer recognisers run on the same audio as edgeasr, so benchmarks can report ratios.

Baselines are optional dependencies (``pip install edgeasr[dev]``); import the module you need,
e.g. :mod:`edgeasr.baselines.pocketsphinx_asr`, which fails with a clear message if it is absent.
"""
