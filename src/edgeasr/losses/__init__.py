"""Training losses: the RNN-T loss now; MWER, distillation, amortization, QAT regulariser later."""

from edgeasr.losses.rnnt import rnnt_loss, rnnt_loss_from_logprobs

__all__ = ["rnnt_loss", "rnnt_loss_from_logprobs"]
