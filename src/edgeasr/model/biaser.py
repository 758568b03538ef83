"""A trained neural biasing module: a tree-constrained pointer generator (TCPGen) for the joiner.

Given a context list, :class:`~edgeasr.search.pointer.PointerTrie` says at each step which tokens
would continue or start a context word. This module turns that into a second distribution and a
gate, and mixes them with the transducer's own output::

    P(blank)  = P_m(blank)
    P(y)      = (1 - g) P_m(y) + g (1 - P_m(blank)) P_ptr(y)          (y not blank)

``P_m`` is the frozen transducer's joiner distribution. ``P_ptr`` is a softmax over the allowed
tokens only, scored by a learned mix of three readings of the joiner plus a learned attention
term (query from the joiner's hidden state, a key per token). The readings are the joiner's
logits, its logits from the acoustics alone (predictor input zero) and from the predictor alone
(encoder input zero, the internal language model of Meng et al., 2021). A name the model never
heard is a sequence its internal LM finds unlikely, so the pointer gains most by discounting
that prior, which the weights learn; they start at "the model's distribution restricted to the
context words". The gate ``g`` reads the joiner state, the pointer's attention summary, how much
of the model's (and of the acoustics-only) probability already falls on the allowed tokens and
where in a context word the hypothesis is; it learns when a context word is really being said.
Blank keeps its probability, so the mixture is a proper distribution and the biased scores stay
calibrated log-probabilities for lattices.

Because the pointer scores tokens by the joiner's logits, it needs no embedding of the context
words themselves and works on names it never saw in training, which is what a contact list is.
The module is trained with the base model frozen (:mod:`edgeasr.train.biaser`), so the unbiased
path of the model is untouched, and exported to ONNX together with the joiner for the device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# the loss's finite minus infinity and its written-out logaddexp, which also exports to ONNX
from edgeasr.losses.rnnt import NEG_INF as NEG
from edgeasr.losses.rnnt import _logaddexp
from edgeasr.model.joiner import Joiner
from edgeasr.search.pointer import NUM_FEATURES
from edgeasr.tokenizer import BLANK_ID


@dataclass(frozen=True)
class BiaserConfig:
    attn_dim: int = 64
    gate_hidden: int = 64
    gate_bias: float = -3.0  # initial gate logit: start close to the unbiased model

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class PointerBiaser(nn.Module):
    """The pointer and gate on top of a frozen joiner; see the module docstring."""

    def __init__(self, joiner: Joiner, cfg: BiaserConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or BiaserConfig()
        J = joiner.out.in_features
        V = joiner.out.out_features
        A = self.cfg.attn_dim
        # Kept as a plain attribute (not a submodule): the joiner's weights belong to the
        # transducer and are neither trained nor saved with the biaser.
        self.__dict__["joiner"] = joiner
        self.query = nn.Linear(J, A, bias=False)
        self.keys = nn.Parameter(torch.zeros(V, A))
        # weights of the joint, acoustic-only and predictor-only logits in the pointer's scores
        self.mix = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))
        self.values = nn.Parameter(torch.randn(V, A) * 0.1)
        self.gate = nn.Sequential(
            nn.Linear(J + A + 2 + NUM_FEATURES, self.cfg.gate_hidden),
            nn.Tanh(),
            nn.Linear(self.cfg.gate_hidden, 1),
        )
        nn.init.normal_(self.query.weight, std=0.01)
        nn.init.constant_(self.gate[2].bias, self.cfg.gate_bias)
        blank = torch.zeros(V)
        blank[BLANK_ID] = 1.0
        self.register_buffer("blank", blank, persistent=False)

    def _parts(
        self,
        enc: torch.Tensor,
        dec: torch.Tensor,
        valid: torch.Tensor,
        feats: torch.Tensor,
        blank_penalty: torch.Tensor | float = 0.0,
        gate_offset: torch.Tensor | float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model log-probs, pointer log-probs, log g, log(1 - g) and log(1 - P_m(blank)).

        ``enc`` and ``dec`` are projected joiner inputs that broadcast to (..., J); ``valid``
        (..., V) is 1 where the pointer may emit a token, ``feats`` (..., NUM_FEATURES) the trie
        position features; all broadcast against each other. ``gate_offset`` is added to the
        gate's logit: a decoding-time knob (like a shallow-fusion boost) that trades names
        recalled against names inserted where none was said; training uses 0.
        """
        out = self.joiner.out
        h = torch.tanh(enc + dec)
        logits = out(h)
        logits = logits - self.blank * blank_penalty
        lp_m = torch.log_softmax(logits, dim=-1)
        allowed = valid * (1.0 - self.blank)
        q = self.query(h)
        acoustic = out(torch.tanh(enc)).expand_as(logits)
        prior = out(torch.tanh(dec)).expand_as(logits)
        scores = self.mix[0] * logits + self.mix[1] * acoustic + self.mix[2] * prior
        ptr_logits = scores + q @ self.keys.t() + (1.0 - allowed) * NEG
        lp_ptr = torch.log_softmax(ptr_logits, dim=-1)
        # how much of the acoustic-only distribution's mass the allowed tokens hold
        lp_ac = torch.log_softmax(acoustic, dim=-1)
        mass_ac = torch.log(torch.clamp((torch.exp(lp_ac) * allowed).sum(-1), min=1e-12))
        attn = torch.exp(lp_ptr) * allowed
        ctx = attn @ self.values
        lb = lp_m[..., BLANK_ID]
        log1m_pb = torch.log(torch.clamp(1.0 - torch.exp(lb), min=1e-12))
        mass = torch.log(torch.clamp((torch.exp(lp_m) * allowed).sum(-1), min=1e-12)) - log1m_pb
        shape = h.shape[:-1]
        feats = feats.expand(*shape, feats.shape[-1])
        g = (
            self.gate(
                torch.cat([h, ctx, mass.unsqueeze(-1), mass_ac.unsqueeze(-1), feats], dim=-1)
            ).squeeze(-1)
            + gate_offset
        )
        any_valid = (allowed.sum(-1) > 0).to(g.dtype)
        log_g = torch.nn.functional.logsigmoid(g) * any_valid + (1.0 - any_valid) * NEG
        log_1mg = torch.nn.functional.logsigmoid(-g) * any_valid
        return lp_m, lp_ptr, log_g, log_1mg, log1m_pb

    def forward(
        self,
        enc: torch.Tensor,
        dec: torch.Tensor,
        valid: torch.Tensor,
        feats: torch.Tensor,
        blank_penalty: torch.Tensor | float = 0.0,
        gate_offset: torch.Tensor | float = 0.0,
    ) -> torch.Tensor:
        """Biased log-probabilities over the vocabulary (..., V), blank included."""
        lp_m, lp_ptr, log_g, log_1mg, log1m_pb = self._parts(
            enc, dec, valid, feats, blank_penalty, gate_offset
        )
        mixed = _logaddexp(log_1mg.unsqueeze(-1) + lp_m, (log_g + log1m_pb).unsqueeze(-1) + lp_ptr)
        return self.blank * lp_m + (1.0 - self.blank) * mixed

    def lattice_log_probs(
        self,
        enc: torch.Tensor,
        dec: torch.Tensor,
        targets: torch.Tensor,
        valid: torch.Tensor,
        feats: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the RNN-T loss needs, on a training lattice: (B, T, U+1) log P(blank) and
        log P(next reference token).

        ``enc`` (B, T, J), ``dec`` (B, U+1, J), ``targets`` (B, U), ``valid`` (B, U+1, V) and
        ``feats`` (B, U+1, F): the pointer state depends on the tokens so far, not on time.
        """
        B, U = targets.shape
        lp_m, lp_ptr, log_g, log_1mg, log1m_pb = self._parts(
            enc[:, :, None], dec[:, None], valid[:, None], feats[:, None]
        )
        nxt = torch.cat([targets, targets.new_zeros(B, 1)], dim=1)  # (B, U+1); last unused
        idx = nxt[:, None, :, None].expand(-1, lp_m.shape[1], -1, 1)
        label_m = lp_m.gather(-1, idx).squeeze(-1)
        label_ptr = lp_ptr.gather(-1, idx).squeeze(-1)
        label = _logaddexp(log_1mg + label_m, log_g + log1m_pb + label_ptr)
        return lp_m[..., BLANK_ID], label
