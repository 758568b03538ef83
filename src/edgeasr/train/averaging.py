"""Weight averaging over the last epochs of a run (stochastic weight averaging).

Why: a short fine-tune (a model update) ends wherever its last few noisy steps leave it, and
the voices and conditions it never trains on are what that noise moves most: one update of the
bundled model on nothing but its own training data moved the original test's WER by +11 %
relative, most of it on the test's one flite voice, which no training utterance is by
(docs/results/diffs-null-1800.md). The uniform mean of the weights over the last epochs' steps
sits in the middle of where those steps wander (Izmailov et al., 2018, "Averaging weights leads
to wider optima and better generalization"; icefall's ``--avg`` averages epoch checkpoints for
the same reason). The mean covers the trained tensors only, the model's and a compressor's own
(hash buckets, low-rank factors); frozen ones do not move. What ships is the compressor's
export of the mean (masks and quantisation applied afresh), so a pruned or quantised model
stays exactly as sparse and on its grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """Running uniform mean of a fixed set of named tensors, updated once per optimiser step.

    The tensors are given once; :meth:`update` adds their current values. A checkpoint keeps
    :meth:`state_dict` (the means and how many steps they hold) so that a resumed run averages
    exactly the steps an uninterrupted one would.
    """

    def __init__(self, named: dict[str, torch.Tensor]) -> None:
        self.tensors = named
        self.mean = {n: t.detach().clone() for n, t in named.items()}
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        """Add the tensors' current values: mean += (x - mean) / (count + 1)."""
        self.count += 1
        for n, t in self.tensors.items():
            self.mean[n].add_(t.detach() - self.mean[n], alpha=1.0 / self.count)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Hold the means in the tensors for the ``with`` block (to evaluate or export the
        averaged model), then put the trained values back so that training goes on from them.
        Before the first update there is nothing to average and the tensors stay as they are."""
        if not self.count:
            yield
            return
        kept = {n: t.detach().clone() for n, t in self.tensors.items()}
        with torch.no_grad():
            for n, t in self.tensors.items():
                t.copy_(self.mean[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, t in self.tensors.items():
                    t.copy_(kept[n])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **{f"mean.{n}": m.contiguous() for n, m in self.mean.items()},
            "count": torch.tensor(self.count, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        names = {k.removeprefix("mean.") for k in state if k.startswith("mean.")}
        if names != set(self.tensors) or "count" not in state:
            missing, extra = set(self.tensors) - names, names - set(self.tensors)
            raise ValueError(
                f"weight average checkpoint does not match the model (missing {sorted(missing)}, "
                f"unexpected {sorted(extra)})"
            )
        with torch.no_grad():
            for n in self.tensors:
                self.mean[n].copy_(state[f"mean.{n}"])
        self.count = int(state["count"])
