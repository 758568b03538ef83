"""Training: data loading, SpecAugment, the trainer (single process and torchrun DDP)."""
