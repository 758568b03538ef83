"""The RNN-T loss against brute-force enumeration of every alignment, and gradcheck."""

import itertools
import math

import torch

from edgeasr.losses.rnnt import rnnt_loss, rnnt_loss_from_logprobs


def brute_force_nll(logp: torch.Tensor, target: list[int], blank: int = 0) -> float:
    """-log sum over all monotonic alignments, enumerated explicitly.

    An alignment is a sequence of T blanks and U labels ending with a blank at t=T-1; we enumerate
    the positions of the U label emissions among the T+U-1 first steps.
    """
    T, U1, _ = logp.shape
    U = U1 - 1
    total = []
    for label_steps in itertools.combinations(range(T + U - 1), U):
        t = u = 0
        score = 0.0
        for step in range(T + U - 1):
            if step in label_steps:
                score += logp[t, u, target[u]].item()
                u += 1
            else:
                score += logp[t, u, blank].item()
                t += 1
        score += logp[T - 1, U, blank].item()
        total.append(score)
    m = max(total)
    return -(m + math.log(sum(math.exp(s - m) for s in total)))


def test_matches_brute_force_with_padding():
    torch.manual_seed(0)
    V = 5
    shapes = [(4, 3), (3, 2), (1, 0), (5, 1), (2, 3)]
    B = len(shapes)
    Tm = max(t for t, _ in shapes)
    Um = max(u for _, u in shapes)
    logits = torch.randn(B, Tm, Um + 1, V, dtype=torch.float64)
    targets = torch.randint(1, V, (B, max(Um, 1)))
    frame_lens = torch.tensor([t for t, _ in shapes])
    label_lens = torch.tensor([u for _, u in shapes])
    got = rnnt_loss(logits, targets, frame_lens, label_lens, reduction="none").double()
    # rnnt_loss casts to float32 internally; compare to the float64 route too
    logp = torch.log_softmax(logits, -1)
    for b, (T, U) in enumerate(shapes):
        ref = brute_force_nll(logp[b, :T, : U + 1], targets[b, :U].tolist())
        assert abs(got[b].item() - ref) < 1e-4, (b, got[b].item(), ref)
        tgt = torch.cat([targets, targets.new_zeros(B, 1)], 1)[:, : Um + 1]
        lab = logp.gather(3, tgt.view(B, 1, Um + 1, 1).expand(B, Tm, Um + 1, 1)).squeeze(3)
        exact = rnnt_loss_from_logprobs(logp[..., 0], lab, frame_lens, label_lens)
        assert abs(exact[b].item() - ref) < 1e-6, (b, exact[b].item(), ref)


def test_gradcheck():
    torch.manual_seed(1)
    B, T, U, V = 2, 3, 2, 4
    blank = torch.randn(B, T, U + 1, dtype=torch.float64, requires_grad=True)
    label = torch.randn(B, T, U + 1, dtype=torch.float64, requires_grad=True)
    frame_lens = torch.tensor([3, 2])
    label_lens = torch.tensor([2, 1])
    fn = lambda b, lab: rnnt_loss_from_logprobs(b, lab, frame_lens, label_lens)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (blank, label))
    assert torch.autograd.gradgradcheck(fn, (blank, label))
    logits = torch.randn(B, T, U + 1, V, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2], [3, 0]])
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss_from_logprobs(
            torch.log_softmax(x, -1)[..., 0],
            torch.log_softmax(x, -1)
            .gather(
                3,
                torch.cat([targets, targets.new_zeros(B, 1)], 1)
                .view(B, 1, U + 1, 1)
                .expand(B, T, U + 1, 1),
            )
            .squeeze(3),
            frame_lens,
            label_lens,
        ),
        (logits,),
    )


def test_loss_is_nonnegative_and_decreases_with_training():
    """A sanity check that can fail: fitting one utterance must drive the loss down."""
    torch.manual_seed(2)
    logits = torch.randn(1, 6, 3, 6, requires_grad=True)
    targets = torch.tensor([[2, 4]])
    fl, ll = torch.tensor([6]), torch.tensor([2])
    opt = torch.optim.SGD([logits], lr=1.0)
    first = rnnt_loss(logits, targets, fl, ll)
    assert first.item() > 0
    for _ in range(50):
        opt.zero_grad()
        loss = rnnt_loss(logits, targets, fl, ll)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first.item()


def test_chunked_joint_matches_full_lattice_and_gradients():
    """Bounded-memory lattice (sub-batches under checkpointing) = the full lattice, grads too."""
    from edgeasr.losses.rnnt import joint_logprobs

    torch.manual_seed(3)
    B, T, U, J, V = 5, 7, 3, 6, 9
    joiner = torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(J, V))

    def join(e, d):
        return joiner(e + d)

    enc = torch.randn(B, T, J, requires_grad=True)
    dec = torch.randn(B, U + 1, J, requires_grad=True)
    targets = torch.randint(1, V, (B, U))
    fl, ll = torch.tensor([7, 5, 6, 7, 3]), torch.tensor([3, 2, 1, 3, 0])
    results = []
    for max_elements in (1 << 30, T * (U + 1) * V * 2):  # whole batch vs two utterances a piece
        enc.grad = dec.grad = None
        joiner.zero_grad()
        b, lab, _ = joint_logprobs(join, enc, dec, targets, V, 0, max_elements)
        loss = rnnt_loss_from_logprobs(b, lab, fl, ll).mean()
        loss.backward()
        results.append(
            (loss.item(), enc.grad.clone(), dec.grad.clone(), joiner[1].weight.grad.clone())
        )
    (l1, *g1), (l2, *g2) = results
    assert abs(l1 - l2) < 1e-5
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
