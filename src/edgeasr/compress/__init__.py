"""Compression: gradual (block) sparsification, quantisation-aware training with a grid regulariser,
post-training quantisation, and the packed low-bit sparse model file the device downloads.

Modules: ``sparsity`` (pruning schedule and masks), ``quant`` (quantisers, regulariser, PTQ),
``training`` (the trainer hook), ``packed`` (the file format; numpy only, read on the device),
``convert`` (model package ⇄ packed file). Nothing is imported here, so the device can read a
packed file without pulling in torch.
"""
