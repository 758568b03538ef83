"""Amortized (branched) streaming encoder: K recurrent branches and a tiny arbitrator.

Each 80 ms frame (``stack`` fbank frames) goes through a shared input projection; the arbitrator
then picks one branch for it from the frame and the current *backlog*, the delay behind real
time that the device would have accumulated so far. The chosen branch advances its recurrent
state on that frame and produces the output; every other branch keeps its state unchanged, so
streaming needs nothing beyond each branch's (h, c) and the backlog.

Training mixes the branches with the arbitrator's Gumbel-softmax probabilities ``p``: the output
is ``sum_k p_k * out_k`` and each branch's state moves only by its share,
``h_k <- p_k * cell_k(x, h_k) + (1 - p_k) * h_k``. As the temperature is annealed towards zero
``p`` becomes one-hot and this is exactly the hard routing used at inference, so the states the
model learns to read are the ones it will see on the device.

The backlog is simulated inside the model from the branches' multiply-adds and a device speed
(``device_mflops``): ``lag_{t+1} = max(0, lag_t + cost(frame t) - frame_s)``. In training the
cost is the expected one under ``p``, which makes the compute and amortization losses
differentiable; at inference it is the chosen branch's cost, matching ``runtime.devicesim``.

With one branch (no arbitrator) the module is a plain single-encoder baseline of the same
recipe; a branch with ``rank > 0`` factorises its matrices (the low-rank baseline), and pruning
(``compress.sparsity``) gives the sparsified one. Costs count non-zero weights, so all three are
measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgeasr.model.encoder import StackFrames, nonzero_macs

# (h_0, c_0, h_1, c_1, ..., [memory,] [previous output,] lag): h/c (L, B, H) per host, the
# arbitrator's memory (B, M) and the last encoder output (B, D) when it reads them, lag (B,)
AmortizedState = tuple[torch.Tensor, ...]


@dataclass
class BranchConfig:
    """One encoder branch: ``layers`` LSTM layers of width ``hidden``; ``rank`` > 0 factorises
    each gate matrix as (4H x r)(r x in), the low-rank variant.

    ``own_input`` gives the branch its own front end on the raw stacked frame instead of the
    encoder's shared projection: the frame is cut into ``split`` sub-frames, each projected to
    ``hidden`` (ReLU) and run through ``sub_layers`` LSTM layers at that rate, then the
    sub-frames are concatenated and projected back to one. With ``split`` 2 and one sub-layer
    this is the layout of the plain LSTM encoder (:class:`edgeasr.model.encoder.Encoder`: 40 ms
    frames, one layer, then 80 ms), so a trained single encoder can be a branch unchanged
    (:func:`lstm_encoder_as_branch`) and only the cheap branch and the arbitrator are new.

    ``shares`` = j makes the branch a *twin* of branch j: the same layout, its own (usually
    low-rank) LSTM matrices, and everything else (front-end and output projections, norms) and
    the recurrent state taken from branch j. A frame routed to the twin advances branch j's
    state with the cheaper matrices, so neither path ever skips a frame: separate branches each
    see only the frames routed to them, a gap that a trained full branch was never taught to
    bridge. A twin starts as the truncated SVD of branch j's matrices (:func:`start_weights`).

    ``front_rank`` > 0 gives a twin its own front-end projections (``in_proj``, and
    ``reduce_proj`` with ``split`` > 1) at that rank, also starting as the truncated SVD of the
    host's: a path whose whole cost is a few per cent of the host's, which the end-of-speech
    latency bar needs (the host's dense front end alone costs more than a frame may take there).
    """

    hidden: int = 320
    layers: int = 2
    rank: int = 0
    own_input: bool = False
    split: int = 1
    sub_layers: int = 0
    shares: int = -1
    front_rank: int = 0

    def __post_init__(self) -> None:
        if self.layers < 1 or self.hidden < 1:
            raise ValueError("a branch needs layers >= 1 and hidden >= 1")
        if not self.own_input and (self.split != 1 or self.sub_layers):
            raise ValueError("split and sub_layers need own_input: true")
        if self.split < 1 or self.sub_layers < 0:
            raise ValueError("a branch needs split >= 1 and sub_layers >= 0")
        if self.shares < -1:
            raise ValueError(f"shares must be -1 (own state) or a branch index, not {self.shares}")
        if self.front_rank < 0 or (self.front_rank and (self.shares < 0 or not self.own_input)):
            raise ValueError("front_rank > 0 needs a twin (shares) with own_input: true")


def _matrix(n_in: int, n_out: int, rank: int, bias: bool) -> nn.Module:
    if rank <= 0:
        return nn.Linear(n_in, n_out, bias=bias)
    return nn.Sequential(nn.Linear(n_in, rank, bias=False), nn.Linear(rank, n_out, bias=bias))


class GatedLSTMLayer(nn.Module):
    """An LSTM layer whose per-frame update is scaled by a gate in [0, 1] (see module doc)."""

    def __init__(self, n_in: int, hidden: int, rank: int = 0) -> None:
        super().__init__()
        self.n_in = n_in
        self.hidden = hidden
        self.ih = _matrix(n_in, 4 * hidden, rank, bias=True)
        self.hh = _matrix(hidden, 4 * hidden, rank, bias=False)

    @staticmethod
    def _dense(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(m, nn.Linear):
            return m.weight, m.bias
        return m[1].weight @ m[0].weight, m[1].bias

    def forward(
        self, x: torch.Tensor, gate: torch.Tensor | None, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, in), gate (B, T) or None (every frame) → candidate outputs (B, T, H) and
        the final (h, c)."""
        if gate is None:
            # every frame is taken: torch's fused LSTM kernel (oneDNN/cuDNN; nn.LSTM's own
            # function, same gate order) on the same weights
            w_ih, b_ih = self._dense(self.ih)
            w_hh, _ = self._dense(self.hh)
            hx = (h[None].contiguous(), c[None].contiguous())
            params = [w_ih, w_hh, b_ih, torch.zeros_like(b_ih)]
            y, h, c = torch.lstm(x, hx, params, True, 1, 0.0, self.training, False, True)
            return y, h[0], c[0]
        xi = self.ih(x)  # the input half of every gate, for all frames at once
        outs = []
        for t in range(x.shape[1]):
            i, f, g, o = (xi[:, t] + self.hh(h)).chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            w = gate[:, t : t + 1]
            h = w * h_new + (1 - w) * h
            c = w * c_new + (1 - w) * c
            outs.append(h_new)
        return torch.stack(outs, dim=1), h, c


def mixed_lstm(
    cells: list[GatedLSTMLayer], x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer whose state is advanced on each frame by a mixture of weight sets.

    x (B, T, in), w (B, T, G): the routing weight of each cell; a frame whose weights sum to
    s < 1 (routed partly elsewhere) keeps (1 - s) of its old state. Returns the outputs (B, T, H)
    (the weight-normalised mixture of the cells' outputs: the frame's output should the frame be
    routed here) and the final (h, c). With one-hot weights this is exactly the chosen cell.
    """
    xis = [cell.ih(x) for cell in cells]  # each cell's input half, all frames at once
    outs = []
    for t in range(x.shape[1]):
        h_mix = c_mix = None
        for g, cell in enumerate(cells):
            i, f, gg, o = (xis[g][:, t] + cell.hh(h)).chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            wg = w[:, t, g : g + 1]
            h_mix = wg * h_new if h_mix is None else h_mix + wg * h_new
            c_mix = wg * c_new if c_mix is None else c_mix + wg * c_new
        total = w[:, t].sum(-1, keepdim=True)
        h = h_mix + (1 - total) * h
        c = c_mix + (1 - total) * c
        outs.append(h_mix / total.clamp_min(1e-6))
    return torch.stack(outs, dim=1), h, c


class Branch(nn.Module):
    """One branch: an optional own front end (see :class:`BranchConfig`), LSTM layers with
    residual connections and layer norms, and a projection back to the encoder width."""

    def __init__(
        self, dim: int, cfg: BranchConfig, dropout: float, frame_dim: int = 0, twin: bool = False
    ) -> None:
        """``twin``: only the LSTM matrices (the rest is the host branch's, see ``shares``)."""
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.twin = twin
        if twin:
            n_in = H if cfg.own_input else dim
            if cfg.front_rank:
                self.in_proj = _matrix(frame_dim // cfg.split, H, cfg.front_rank, bias=True)
                if cfg.split > 1:
                    self.reduce_proj = _matrix(cfg.split * H, H, cfg.front_rank, bias=True)
            self.sub_layers = nn.ModuleList(
                GatedLSTMLayer(H, H, cfg.rank) for _ in range(cfg.sub_layers)
            )
            self.layers = nn.ModuleList(
                GatedLSTMLayer(n_in if i == 0 else H, H, cfg.rank) for i in range(cfg.layers)
            )
            return
        if cfg.own_input:
            if not frame_dim or frame_dim % cfg.split:
                raise ValueError(f"a frame of {frame_dim} values does not cut into {cfg.split}")
            self.in_proj = nn.Linear(frame_dim // cfg.split, H)
            self.sub_layers = nn.ModuleList(
                GatedLSTMLayer(H, H, cfg.rank) for _ in range(cfg.sub_layers)
            )
            self.sub_norms = nn.ModuleList(nn.LayerNorm(H) for _ in range(cfg.sub_layers))
            if cfg.split > 1:
                self.reduce_proj = nn.Linear(cfg.split * H, H)
        sizes = [H if cfg.own_input else dim] + [H] * cfg.layers
        self.layers = nn.ModuleList(GatedLSTMLayer(a, H, cfg.rank) for a in sizes[:-1])
        self.norms = nn.ModuleList(nn.LayerNorm(H) for _ in range(cfg.layers))
        self.out = nn.Linear(H, dim) if H != dim else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    @property
    def num_states(self) -> int:
        """LSTM layers whose (h, c) the branch carries: sub-frame layers first."""
        return self.cfg.sub_layers + self.cfg.layers

    def lstm_macs(self) -> int:
        """Multiply-adds of the LSTM matrices for one routed frame (sub-frame layers run
        ``split`` times)."""
        sub = self.cfg.split * nonzero_macs(self.sub_layers) if self.cfg.own_input else 0
        return sub + nonzero_macs(self.layers)

    def front_macs(self) -> int:
        """Multiply-adds of the own front end for one frame (0 for a twin on its host's)."""
        if not self.cfg.own_input or not hasattr(self, "in_proj"):
            return 0
        macs = self.cfg.split * nonzero_macs(self.in_proj)
        return macs + (nonzero_macs(self.reduce_proj) if self.cfg.split > 1 else 0)

    def frame_macs(self) -> int:
        """Multiply-adds of one routed frame (a twin's: its own matrices only)."""
        macs = self.lstm_macs() + self.front_macs()
        return macs if self.twin else macs + nonzero_macs(self.out)

    def forward(
        self,
        x: torch.Tensor,
        gate: torch.Tensor | None,
        h0: torch.Tensor,
        c0: torch.Tensor,
        twins: tuple[Branch, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, in): the shared frame vectors, or with ``own_input`` the raw stacked frames;
        gate (B, T) or None (every frame taken); h0, c0 (num_states, B, H).

        With ``twins`` (see :class:`BranchConfig`) gate is (B, T, 1 + len(twins)), the routing
        weights of this branch and each twin, and every LSTM layer advances the one state with
        their mixture (:func:`mixed_lstm`); the output is then the weight-normalised mixture.
        """
        cfg, n_sub = self.cfg, self.cfg.sub_layers
        members = (self, *twins)

        def project(name: str, x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
            """A front-end projection; with twins that have their own (``front_rank``), the
            weight-normalised mixture of each path's projection (one-hot: the chosen one)."""
            own = [k for k, m in enumerate(members) if k and hasattr(m, name)]
            if not own:
                return getattr(self, name)(x)
            w = gate / gate.sum(-1, keepdim=True).clamp_min(1e-6)
            rest = [k for k in range(len(members)) if k not in own]
            y = w[..., rest].sum(-1, keepdim=True) * getattr(self, name)(x)
            for k in own:
                y = y + w[..., k : k + 1] * getattr(members[k], name)(x)
            return y

        def run(group: str, norms: nn.ModuleList, x, gate, h0, c0):
            hs, cs = [], []
            for i, norm in enumerate(norms):
                if twins:
                    y, h, c = mixed_lstm(
                        [getattr(m, group)[i] for m in members], x, gate, h0[i], c0[i]
                    )
                else:
                    y, h, c = getattr(self, group)[i](x, gate, h0[i], c0[i])
                hs.append(h)
                cs.append(c)
                y = self.dropout(y)
                x = norm(x + y) if x.shape[-1] == y.shape[-1] else norm(y)
            return x, hs, cs

        hs: list[torch.Tensor] = []
        cs: list[torch.Tensor] = []
        if cfg.own_input:
            B, T, D = x.shape
            sub_gate = None if gate is None else gate.repeat_interleave(cfg.split, dim=1)
            x = project("in_proj", x.reshape(B, T * cfg.split, D // cfg.split), sub_gate)
            x = self.dropout(torch.relu(x))
            x, hs, cs = run("sub_layers", self.sub_norms, x, sub_gate, h0[:n_sub], c0[:n_sub])
            if cfg.split > 1:
                x = project("reduce_proj", x.reshape(B, T, cfg.split * cfg.hidden), gate)
        x, h_main, c_main = run("layers", self.norms, x, gate, h0[n_sub:], c0[n_sub:])
        return self.out(x), torch.stack(hs + h_main), torch.stack(cs + c_main)


class AmortizedEncoder(nn.Module):
    """Same interface as :class:`edgeasr.model.encoder.Encoder`, with routing on the side.

    Args:
        num_mel_bins, stack: input features and how many 10 ms frames make one routed frame.
        dim: width of the shared frame vector and of the encoder output.
        branches: one config per branch (index 0 is conventionally the slow, full one).
        arbitrator_hidden: width of the arbitrator's hidden layer.
        device_mflops: speed of the device the backlog is simulated for.
        arbitrator_memory: width of a GRU state the arbitrator carries across frames (0: none).
            Without it the arbitrator sees one frame and the backlog; the end-of-speech latency
            bar needs the last frames *before* the end on the cheap path, which takes context.
        arbitrator_feedback: the arbitrator also reads the encoder output of the frame before
            (what has been heard so far, not only how it sounds); frames are then routed and
            encoded one at a time.
        guard_backlog_frames: the backlog guard in frames (``guard_backlog_s``; negative: off).
        hard_backlog: in training, simulate the backlog from the sampled hard choices with a
            straight-through gradient instead of the soft expected cost (``_backlog_after``).
    """

    def __init__(
        self,
        num_mel_bins: int,
        stack: int,
        dim: int,
        branches: list[BranchConfig],
        arbitrator_hidden: int = 32,
        dropout: float = 0.1,
        device_mflops: float = 650.0,
        arbitrator_memory: int = 0,
        arbitrator_feedback: bool = False,
        guard_backlog_frames: float = -1.0,
        hard_backlog: bool = False,
    ) -> None:
        super().__init__()
        if not branches:
            raise ValueError("an amortized encoder needs at least one branch")
        self.stack = StackFrames(stack)
        self.frame_s = stack * 0.01
        self.dim = dim
        frame_dim = num_mel_bins * stack
        # the shared projection, unless every branch has its own front end
        self.input_proj = (
            nn.Linear(frame_dim, dim) if not all(b.own_input for b in branches) else None
        )
        for k, b in enumerate(branches):
            if b.shares < 0:
                continue
            host = branches[b.shares] if b.shares < k else None
            layout = ("hidden", "layers", "own_input", "split", "sub_layers")
            if host is None or host.shares >= 0:
                raise ValueError(f"branch {k} shares branch {b.shares}: not an earlier host")
            if any(getattr(host, f) != getattr(b, f) for f in layout):
                raise ValueError(f"branch {k} shares branch {b.shares}, so needs its {layout}")
        self.branches = nn.ModuleList(
            Branch(dim, b, dropout, frame_dim, twin=b.shares >= 0) for b in branches
        )
        # branches that share one recurrent state: a host (own state) first, then its twins
        self.groups = [
            [k] + [j for j, t in enumerate(branches) if t.shares == k]
            for k, b in enumerate(branches)
            if b.shares < 0
        ]
        self.memory = arbitrator_memory if len(branches) > 1 else 0
        self.feedback = arbitrator_feedback and len(branches) > 1
        self.arbitrator = (
            nn.ModuleDict(
                {
                    # the arbitrator reads the shared frame vector, else the raw stacked frame
                    "frame": nn.Linear(dim if self.input_proj else frame_dim, arbitrator_hidden),
                    "backlog": nn.Linear(1, arbitrator_hidden, bias=False),
                    "out": nn.Linear(arbitrator_hidden + self.memory, len(branches)),
                }
                | ({"memory": nn.GRUCell(arbitrator_hidden, self.memory)} if self.memory else {})
                | (
                    {"feedback": nn.Linear(dim, arbitrator_hidden, bias=False)}
                    if self.feedback
                    else {}
                )
            )
            if len(branches) > 1
            else None
        )
        self.device_mflops = device_mflops
        self.temperature = 1.0  # Gumbel-softmax temperature, annealed by the trainer
        # every frame to this branch (training one branch on its own, ``train.force_branch``);
        # None: the arbitrator routes. Not part of the model's config: a package routes.
        self.forced_branch: int | None = None
        # a scheduling guard (None: off): with more than this many seconds queued, branches
        # slower than real time are not taken, so full frames never run back to back and one
        # fast frame drains what a full one leaves. From the model's config
        # (``guard_backlog_frames``), so training routes under the rule inference will apply;
        # a caller may change it (``edgeasr simulate --guard-backlog-frames``, ``decode``).
        self.guard_backlog_s = (
            guard_backlog_frames * self.frame_s if guard_backlog_frames >= 0 else None
        )
        self.hard_backlog = hard_backlog  # see _backlog_after
        self.dropout = nn.Dropout(dropout)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    # -- cost ----------------------------------------------------------------------------
    def frame_macs(self) -> list[int]:
        """Multiply-adds of one routed frame through each branch, shared parts included."""
        shared = nonzero_macs(self.input_proj) if self.input_proj is not None else 0
        if self.arbitrator is not None:
            shared += nonzero_macs(self.arbitrator)
        out = []
        for b in self.branches:
            macs = b.frame_macs()
            if b.twin:  # the twin's own matrices; the host's output (and front end, if shared)
                host = self.branches[b.cfg.shares]
                macs += host.frame_macs() - host.lstm_macs()
                macs -= host.front_macs() if b.cfg.front_rank else 0
            out.append(shared + macs)
        return out

    def frame_cost_s(self) -> torch.Tensor:
        """Seconds one frame of each branch takes on the simulated device (K,)."""
        macs = torch.tensor(self.frame_macs(), dtype=torch.float32)
        return 2.0 * macs / (self.device_mflops * 1e6)

    # -- state ---------------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device | None = None) -> AmortizedState:
        out: list[torch.Tensor] = []
        for group in self.groups:  # one (h, c) per group: twins use their host's
            b = self.branches[group[0]]
            shape = (b.num_states, batch, b.cfg.hidden)
            out += [torch.zeros(shape, device=device), torch.zeros(shape, device=device)]
        if self.memory:
            out.append(torch.zeros(batch, self.memory, device=device))
        if self.feedback:  # the encoder output of the frame before
            out.append(torch.zeros(batch, self.dim, device=device))
        return (*out, torch.zeros(batch, device=device))

    # -- routing -------------------------------------------------------------------------
    def _guarded(self, cost: torch.Tensor) -> torch.Tensor | None:
        """The branches the backlog guard may block (K,), from each branch's seconds per frame;
        None when the guard is off or every branch is slower than real time (one must stay
        open). Computed once per call, not per frame."""
        if self.guard_backlog_s is None:
            return None
        slow = cost > self.frame_s
        return None if bool(slow.all()) else slow

    def _decide(
        self,
        pre: torch.Tensor,
        lag: torch.Tensor,
        memory: torch.Tensor | None,
        guarded: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One frame's routing weights (B, K) from its arbitrator input ``pre`` (B, A) and the
        backlog it met; the arbitrator's memory moves on by the frame. ``guarded``: the
        branches the backlog guard blocks above its backlog (``_guarded``)."""
        arb = self.arbitrator
        # backlog in frames, so the arbitrator's input scale does not depend on frame_s
        a = torch.relu(pre + (lag / self.frame_s)[:, None] * arb["backlog"].weight[:, 0])
        if memory is not None:
            memory = arb["memory"](a, memory)
            a = torch.cat([a, memory], -1)
        logits = arb["out"](a)
        if guarded is not None:
            blocked = (lag > self.guard_backlog_s)[:, None] & guarded[None]
            logits = logits.masked_fill(blocked, float("-inf"))
        if self.training:
            return F.gumbel_softmax(logits, tau=self.temperature, hard=False), memory
        return F.one_hot(logits.argmax(-1), self.num_branches).to(pre.dtype), memory

    def _backlog_after(
        self, lag: torch.Tensor, w: torch.Tensor, cost: torch.Tensor
    ) -> torch.Tensor:
        """The backlog the next frame meets after a frame routed by ``w`` (B, K).

        With ``hard_backlog`` in training the frame counts at its sampled branch's cost (the
        argmax of the Gumbel sample, as on the device) with the soft weights' gradient
        (straight-through). The soft expected cost hides backlog: a frame half on a 151 ms and
        half on a 9 ms path costs 80 ms, so nothing seems queued and the latency loss has no
        gradient, where the device would queue 71 ms (and the guard would block the next one).
        """
        if self.training and self.hard_backlog:
            hard = F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype)
            w = hard + w - w.detach()
        return torch.relu(lag + w @ cost - self.frame_s)

    def route(
        self, x: torch.Tensor, lag0: torch.Tensor, memory0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Routing weights (B, T, K), the backlog each frame met (B, T), the final backlog (B,)
        and the arbitrator's final memory (B, M) (None without one).

        Training: Gumbel-softmax samples at ``self.temperature``; evaluation: one-hot argmax;
        with ``forced_branch`` set, that branch for every frame.
        """
        B, T, _ = x.shape
        cost = self.frame_cost_s().to(x.device)
        guarded = self._guarded(cost)
        arb = None if self.forced_branch is not None else self.arbitrator
        only = x.new_zeros(B, self.num_branches)
        only[:, self.forced_branch or 0] = 1.0
        if arb is not None:
            pre = arb["frame"](x)  # (B, T, A): the frame half, all frames at once
        weights_t, lags = [], []
        lag, memory = lag0, memory0
        for t in range(T):
            lags.append(lag)
            if arb is None:  # a single branch (or the forced one) takes every frame
                w = only
            else:
                w, memory = self._decide(pre[:, t], lag, memory, guarded)
            weights_t.append(w)
            lag = self._backlog_after(lag, w, cost)
        return torch.stack(weights_t, 1), torch.stack(lags, 1), lag, memory

    # -- forward -------------------------------------------------------------------------
    def _encode(
        self, raw: torch.Tensor, shared: torch.Tensor, weights: torch.Tensor, hc: list
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run routed frames through every branch group: the output (B, T, D) and each host's
        new (h, c), from ``hc`` (h_0, c_0, h_1, c_1, ...)."""
        out = raw.new_zeros(*raw.shape[:2], self.dim)
        new_state: list[torch.Tensor] = []
        forced = self.forced_branch
        for slot, group in enumerate(self.groups):
            h0, c0 = hc[2 * slot], hc[2 * slot + 1]
            if forced is not None and forced not in group:  # never routed to: unchanged
                new_state += [h0, c0]
                continue
            host = self.branches[group[0]]
            x = raw if host.cfg.own_input else shared
            if len(group) == 1:
                gate = weights[..., group[0]]
                # one branch takes every frame: the fused kernel (gate would be all ones)
                single = self.num_branches == 1 or forced is not None
                y, h, c = host(x, None if single else gate, h0, c0)
                out = out + gate.unsqueeze(-1) * y
            else:
                w = weights[..., group]
                twins = tuple(self.branches[k] for k in group[1:])
                y, h, c = host(x, w, h0, c0, twins)
                out = out + w.sum(-1, keepdim=True) * y
            new_state += [h, c]
        return out, new_state

    def _forward_feedback(
        self, raw: torch.Tensor, shared: torch.Tensor, hc: list, lag: torch.Tensor, memory, prev
    ):
        """Frame by frame: route frame t on its features, the backlog and the encoder output of
        frame t - 1 (``prev``, B x D), then encode it. The same computation as routing every
        frame first and encoding after (``_encode`` on one frame is the layer-major pass cut at
        t), only in an order that lets the decision see what the encoder has heard so far."""
        arb = self.arbitrator
        cost = self.frame_cost_s().to(raw.device)
        guarded = self._guarded(cost)
        pre = arb["frame"](shared)
        outs, weights_t, lags = [], [], []
        for t in range(raw.shape[1]):
            lags.append(lag)
            # detached: the arbitrator reads what was encoded; its losses (compute, backlog,
            # latency) must not reshape the encoder's output to suit the routing
            feedback = arb["feedback"](prev.detach())
            w, memory = self._decide(pre[:, t] + feedback, lag, memory, guarded)
            weights_t.append(w)
            lag = self._backlog_after(lag, w, cost)
            y, hc = self._encode(raw[:, t : t + 1], shared[:, t : t + 1], w[:, None], hc)
            prev = y[:, 0]
            outs.append(y)
        out = torch.cat(outs, 1)
        return out, hc, torch.stack(weights_t, 1), torch.stack(lags, 1), lag, memory, prev

    def forward_routed(
        self, feats: torch.Tensor, lens: torch.Tensor, state: AmortizedState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, AmortizedState, torch.Tensor, torch.Tensor]:
        """Encode normalised features; also return routing weights (B, T', K) and the backlog
        each frame met (B, T') for the compute and amortization losses and the simulator."""
        raw, lens = self.stack(feats, lens)
        shared = raw
        if self.input_proj is not None:
            shared = self.dropout(torch.relu(self.input_proj(raw)))
        if state is None:
            state = self.init_state(feats.shape[0], feats.device)
        n = 2 * len(self.groups)
        hc, extras = list(state[:n]), list(state[n:-1])
        memory = extras.pop(0) if self.memory else None
        prev = extras.pop(0) if self.feedback else None
        if prev is not None and self.forced_branch is None:
            out, hc, weights, lags, lag_end, memory, prev = self._forward_feedback(
                raw, shared, hc, state[-1], memory, prev
            )
        else:
            weights, lags, lag_end, memory = self.route(shared, state[-1], memory)
            out, hc = self._encode(raw, shared, weights, hc)
            prev = out[:, -1] if prev is not None and out.shape[1] else prev
        extra = [t for t in (memory, prev) if t is not None]
        return out, lens, (*hc, *extra, lag_end), weights, lags

    def forward(
        self, feats: torch.Tensor, lens: torch.Tensor, state: AmortizedState | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, AmortizedState]:
        out, lens, state, _, _ = self.forward_routed(feats, lens, state)
        return out, lens, state


def transplant(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Start ``model`` from another model's weights wherever they fit.

    Tensors with the same name and shape are copied. A factorised matrix of this model
    (``X.0.weight`` (r, in) and ``X.1.weight`` (out, r), see :class:`BranchConfig`) whose source
    is a dense ``X.weight`` starts from the source's rank-r truncated SVD, the best rank-r
    approximation, and ``X.1.bias`` from ``X.bias``. This is how a branched encoder's full branch
    and a low-rank baseline start from a trained single encoder. Returns the names copied,
    factorised and left as initialised.
    """
    own = model.state_dict()
    report: dict[str, list[str]] = {"copied": [], "factorized": [], "fresh": []}
    with torch.no_grad():
        for name, t in own.items():
            if name in source and source[name].shape == t.shape:
                t.copy_(source[name])
                report["copied"].append(name)
                continue
            stem, _, leaf = name.rpartition(".")
            base, _, part = stem.rpartition(".")
            dense = source.get(f"{base}.weight")
            if part in ("0", "1") and dense is not None and dense.dim() == 2:
                u, s, vh = torch.linalg.svd(dense.float(), full_matrices=False)
                k = min(own[f"{base}.0.weight"].shape[0], len(s))  # beyond k: exact, zeros
                root = s[:k].sqrt()
                if part == "0" and leaf == "weight":
                    t.zero_()[:k].copy_(root[:, None] * vh[:k])
                elif part == "1" and leaf == "weight":
                    t.zero_()[:, :k].copy_(u[:, :k] * root[None])
                elif part == "1" and leaf == "bias" and f"{base}.bias" in source:
                    t.copy_(source[f"{base}.bias"])
                else:
                    report["fresh"].append(name)
                    continue
                report["factorized"].append(name)
                continue
            report["fresh"].append(name)
    return report


def lstm_encoder_as_branch(
    source: dict[str, torch.Tensor], reduce_after: int, branch: int = 0
) -> dict[str, torch.Tensor]:
    """A plain LSTM encoder's weights (:class:`edgeasr.model.encoder.Encoder`, state-dict names
    ``encoder.*``) renamed as branch ``branch`` of an amortized encoder with the same layout
    (``own_input``, ``split`` 2, ``sub_layers`` = ``reduce_after``), for :func:`transplant`.

    The encoder's layers before its frame-rate reduction become the branch's sub-frame layers,
    the rest its main layers; ``nn.LSTM``'s two biases are summed into the one the gated layer
    has. Unprojected LSTMs only (``lstm_hidden == encoder_dim``): a projected LSTM has no
    counterpart here. Other tensors (predictor, joiner, statistics) are returned unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    pre = f"encoder.branches.{branch}."
    for name, t in source.items():
        if not name.startswith("encoder."):
            out[name] = t
            continue
        parts = name.split(".")
        if parts[1] in ("input_proj", "reduce_proj"):
            key = "in_proj" if parts[1] == "input_proj" else "reduce_proj"
            out[pre + f"{key}.{parts[2]}"] = t
        elif parts[1] == "norms":
            i = int(parts[2])
            group, j = ("sub_norms", i) if i < reduce_after else ("norms", i - reduce_after)
            out[pre + f"{group}.{j}.{parts[3]}"] = t
        elif parts[1] == "layers":
            i, leaf = int(parts[2]), parts[3]
            group, j = ("sub_layers", i) if i < reduce_after else ("layers", i - reduce_after)
            stem = pre + f"{group}.{j}."
            if leaf.startswith("weight_hr"):
                raise ValueError("a projected LSTM encoder cannot be a branch")
            if leaf == "weight_ih_l0":
                out[stem + "ih.weight"] = t
            elif leaf == "weight_hh_l0":
                out[stem + "hh.weight"] = t
            elif leaf == "bias_ih_l0":
                out[stem + "ih.bias"] = t + source[name.replace("bias_ih", "bias_hh")]
        else:
            raise ValueError(f"unexpected encoder tensor {name}")
    return out


def start_weights(model: nn.Module, source: nn.Module) -> dict[str, torch.Tensor]:
    """``source``'s weights to :func:`transplant` into ``model``: a plain LSTM encoder's are
    renamed as branch 0 when ``model``'s encoder is amortized (see
    :func:`lstm_encoder_as_branch`), anything else is taken by name as it is; a twin branch
    (``shares``) the source has no weights for gets its host's LSTM matrices (and front-end
    projections, with ``front_rank``), which transplant factorises to the twin's ranks."""
    from edgeasr.model.encoder import Encoder

    state = source.state_dict()
    src_enc, own_enc = getattr(source, "encoder", None), getattr(model, "encoder", None)
    if isinstance(src_enc, Encoder) and isinstance(own_enc, AmortizedEncoder):
        state = lstm_encoder_as_branch(state, src_enc.cfg.reduce_after)
    pre = "encoder."
    if isinstance(model, AmortizedEncoder):  # the encoder alone: its names have no prefix
        own_enc, pre = model, ""
    if isinstance(own_enc, AmortizedEncoder):
        # a twin the source lacks starts from its host's LSTM matrices (factorised by transplant)
        for k, b in enumerate(own_enc.branches):
            if not b.twin:
                continue
            host = f"{pre}branches.{b.cfg.shares}."
            for name in [n for n in state if n.startswith(host)]:
                rest = name[len(host) :]
                twin = f"{pre}branches.{k}.{rest}"
                own = ("layers.", "sub_layers.")
                own += ("in_proj.", "reduce_proj.") if b.cfg.front_rank else ()
                if rest.startswith(own) and twin not in state:
                    state[twin] = state[name]
    return state
