"""Training losses: the RNN-T loss (rnnt), lattice distillation towards a teacher transducer
(distill) and the amortized encoder's compute and amortization terms (amortization). The QAT
grid regulariser lives with the rest of quantisation in edgeasr.compress.quant; MWER is not
written yet."""

from edgeasr.losses.distill import lattice_kd_loss
from edgeasr.losses.rnnt import rnnt_loss, rnnt_loss_from_logprobs

__all__ = ["lattice_kd_loss", "rnnt_loss", "rnnt_loss_from_logprobs"]
