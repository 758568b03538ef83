"""Knowledge distillation between two transducers, over the whole alignment lattice.

The student matches the teacher's output distribution over the full vocabulary at every lattice
node (t, u) of the reference, KL(teacher ‖ student). The per-node KL is computed inside
:func:`edgeasr.losses.rnnt.joint_logprobs`, a sub-batch at a time next to the student's own
log-softmax, so distillation never holds a whole (B, T, U+1, V) tensor.

Why the full vocabulary and not only {blank, next token, rest} (Panchapagesan et al., ICASSP
2021, which saves memory at vocabularies of thousands): what a model update breaks is often a
*wrong* token gaining mass. After an update full of Polish surnames the model started writing
"prz…" and "…kow" into old requests ("play some przkowski" for "play some classical music"); the
collapsed distribution cannot see that, since it only counts the reference token against all
others together. With our vocabularies of a few hundred pieces the full KL is cheap.

Why distil at all rather than just train on the labels: the teacher's soft distribution at every
node (how sure it is, where it would emit, which confusions it allows) carries far more about its
behaviour than the one-hot reference; an update that must not forget what the device model knew
(issue 6) matches the old model on the data it rehearses.
"""

from __future__ import annotations

import torch


def node_kl(student_logp: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(…, V) student log-probs and teacher logits → (…) KL(teacher ‖ student) per node."""
    t_logp = torch.log_softmax(teacher_logits.to(student_logp.dtype), dim=-1)
    return (t_logp.exp() * (t_logp - student_logp)).sum(-1)


def lattice_kd_loss(
    kl: torch.Tensor, frame_lens: torch.Tensor, label_lens: torch.Tensor
) -> torch.Tensor:
    """Per-node KL (B, T, U+1) → one distillation loss per utterance, (B,).

    The KL is summed over the utterance's valid nodes (t < T_b, u ≤ U_b) and divided by U_b + 1:
    the lattice has U_b + 1 nodes per frame against one node per step of an alignment path, so
    this keeps the value on the scale of the RNN-T loss (a sum along a path) whatever the length
    of the transcript.
    """
    B, T, U1 = kl.shape
    t_idx = torch.arange(T, device=kl.device).view(1, T, 1)
    u_idx = torch.arange(U1, device=kl.device).view(1, 1, U1)
    valid = (t_idx < frame_lens.view(B, 1, 1)) & (u_idx <= label_lens.view(B, 1, 1))
    return torch.where(valid, kl, 0.0).sum(dim=(1, 2)) / (label_lens.to(kl.dtype) + 1.0)
