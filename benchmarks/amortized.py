"""Amortized-encoder benchmark: compute, accuracy and end-of-speech latency on a simulated device.

Trains (or resumes, from ``--runs``) the issue-5 models with one recipe and compares them on the
same test audio:

- ``full``: the single full encoder (``configs/amortized/full.yaml``), slower than real time on
  the simulated device;
- ``amnet``: the branched encoder started from ``full`` (``configs/amortized/amnet.yaml``), with
  the compute term and the amortization loss;
- ``amnet-noam``: the same without the amortization loss;
- ``lowrank`` and ``sparse``: single encoders started from ``full`` whose matrices are factorised
  (truncated SVD, then fine-tuned) or pruned (cubic schedule, encoder branch only) until their
  multiply-adds per frame equal the branched model's average, fine-tuned with amnet's schedule.

Per model: average multiply-adds per 80 ms frame (hard routing, non-zero weights), share of
frames on the fast branch, WER (modified beam search, beam 4, no blank penalty, the same for all)
on test and test_xengine, and on the simulated device (``runtime.devicesim``): end-of-speech
latency p50/p90/max and compute time over audio time. Also the routing statistics of every
training epoch and PNGs of routing and backlog over one utterance. Writes
docs/results/amortized.{md,json,png} and amortized_latency.png.

    .venv/bin/python benchmarks/amortized.py --corpus data/corpus
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    REPO_ROOT,
    ResultsPage,
    benchmark_parser,
    even_subset,
    limit_threads,
    markdown_table,
    pct,
    set_torch_threads,
)

log = logging.getLogger("amortized")

SPLITS = ("test", "test_xengine")
CONFIGS = REPO_ROOT / "configs" / "amortized"
MODELS = ("full", "amnet", "amnet-noam", "lowrank", "sparse")


def train(name: str, cfg, corpus: Path, runs: Path) -> Path:
    """Train or resume one model; an already finished run returns at once.

    A config with ``epochs: 0`` trains nothing: its model is ``init_weights_from`` moved into
    the config's layout (a plain LSTM encoder becomes branch 0, see ``lstm_encoder_as_branch``),
    which must fill every tensor, so ``full`` can be an already trained model.
    """
    if cfg.train.epochs == 0:
        return adopt(cfg, runs / name / "best")
    from edgeasr.train.trainer import Trainer

    return Trainer(cfg, corpus, runs / name).fit()


def trained_runs(specs: list[str]) -> dict[str, Path]:
    """``--trained NAME=RUN``: branched models trained outside this command (e.g. on a GPU by
    ``scripts/device_train.sh``); RUN must hold the run's ``best/`` package, ``metrics.jsonl``
    (the routing per epoch) and ``config.yaml`` (named on the page)."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, run = spec.partition("=")
        if not sep or name not in ("amnet", "amnet-noam"):
            raise SystemExit(f"--trained takes amnet=RUN or amnet-noam=RUN, not {spec!r}")
        missing = [
            f
            for f in ("best/manifest.json", "metrics.jsonl", "config.yaml")
            if not (Path(run) / f).is_file()
        ]
        if missing:
            raise SystemExit(f"--trained {spec}: {run} has no {', '.join(missing)}")
        out[name] = Path(run)
    return out


def adopt(cfg, out: Path) -> Path:
    """``cfg.train.init_weights_from`` as a package of ``cfg.model``'s layout, unchanged."""
    from edgeasr.model.amortized import start_weights, transplant
    from edgeasr.model.checkpoint import load_package, save_package
    from edgeasr.model.transducer import Transducer

    if (out / "manifest.json").is_file():
        return out
    source, tok, manifest = load_package(cfg.train.init_weights_from)
    cfg.model.vocab_size = tok.vocab_size
    model = Transducer(cfg.model)
    report = transplant(model, start_weights(model, source))
    if report["fresh"]:
        raise ValueError(
            f"{cfg.train.init_weights_from} does not fill {cfg.name}: "
            f"{', '.join(report['fresh'][:4])} ..."
        )
    info = {"adopted_from": str(cfg.train.init_weights_from), "source_info": manifest.get("info")}
    save_package(model, tok, out, info=info)
    return out


def fine_tune_schedule(cfg, like) -> None:
    """Give ``cfg`` the fine-tuning schedule of ``like`` (the branched model's)."""
    for key in (
        "epochs",
        "max_train_utts",
        "lr",
        "warmup_steps",
        "ctc_warmup_steps",
        "min_lr_ratio",
        "checkpoint_every",
    ):
        setattr(cfg.train, key, getattr(like.train, key))
    cfg.train.time_budget_s = 0.0


def cost_parts(cfg) -> dict[str, float]:
    """Multiply-adds per frame of a single-branch config, by part: the shared input
    projection (none when the branch has its own front end), the branch's other fixed matrices
    (own input and reduction projections, output projection), its LSTM matrices, and the LSTM
    matrices' cost per unit of rank when factorised."""
    from edgeasr.model.encoder import nonzero_macs
    from edgeasr.model.transducer import Transducer

    enc = Transducer(cfg.model).encoder
    branch = enc.branches[0]
    br = branch.cfg
    sub = list(branch.sub_layers) if br.own_input else []
    lstm = br.split * sum(nonzero_macs(x) for x in sub) + nonzero_macs(branch.layers)
    # (rows + columns) of both gate matrices of every LSTM layer, times the times it runs
    per_rank = sum(
        times * (layer.n_in + 4 * br.hidden + br.hidden + 4 * br.hidden)
        for times, layer in [(br.split, x) for x in sub] + [(1, x) for x in branch.layers]
    )
    return {
        "input": float(nonzero_macs(enc.input_proj)) if enc.input_proj is not None else 0.0,
        "fixed": float(branch.frame_macs() - lstm),
        "lstm": float(lstm),
        "per_rank": float(per_rank),
    }


def evaluate(model_dir: Path, caches: dict, ends: dict, mflops: float, beam: int) -> dict[str, Any]:
    from edgeasr.decode import evaluate_cache
    from edgeasr.model.checkpoint import load_package
    from edgeasr.model.cost import simulate_cache, summarize

    model, tok, _ = load_package(model_dir)
    out: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    for split, cache in caches.items():
        ev = evaluate_cache(model, tok, cache, method="beam", beam=beam, blank_penalty=0.0)
        sims = simulate_cache(model, cache, ends[split], mflops)
        out[split] = {"wer": ev.wer, "words": ev.num_ref_words, **summarize(sims)}
        out[split]["latencies_s"] = [s.latency_s for s in sims]
    return out


def routing_epochs(run: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        {"epoch": r["epoch"], "dev_wer": r["dev_wer"], **r["routing"]}
        for r in lines
        if "routing" in r
    ]


def trace_plot(models: dict[str, Path], cache, ends: dict, mflops: float, out: Path) -> str:
    """Routing decisions and backlog over one test utterance, one row per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edgeasr.model.checkpoint import load_package
    from edgeasr.model.cost import encoder_trace, frame_seconds
    from edgeasr.runtime.devicesim import simulate

    utt = max(cache.utts[:60], key=lambda u: u.num_frames)  # a long one among the first
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 2.2 * len(models)), sharex=True)
    for ax, (name, d) in zip(np.atleast_1d(axes), models.items(), strict=True):
        model = load_package(d)[0]
        model.encoder.device_mflops = mflops
        branch, macs = encoder_trace(model, cache.features(utt))
        fs = frame_seconds(model)
        sim = simulate(macs, fs, mflops, ends.get(utt.id))
        t = sim.arrival_s
        ax.step(t, 1000 * sim.backlog_s, where="post", color="tab:red", label="backlog (ms)")
        ax.set_ylabel("backlog ms")
        ax2 = ax.twinx()
        ax2.bar(t, branch != 0, width=fs * 0.9, alpha=0.3, color="tab:blue", label="fast branch")
        ax2.set_yticks([0, 1], ["full", "fast"])
        ax.axvline(ends.get(utt.id, t[-1]), color="k", ls="--", lw=1)
        ax.set_title(f"{name}: end-of-speech latency {1000 * sim.latency_s:.0f} ms", fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel(f"time (s), utterance {utt.id}; dashed: end of speech")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return utt.id


def latency_plot(results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, res in results.items():
        lat = np.sort(1000 * np.asarray(res["test"]["latencies_s"]))
        ax.plot(lat, np.linspace(0, 1, len(lat)), label=name)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("end-of-speech latency on the simulated device (ms)")
    ax.set_ylabel("share of test utterances")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser(__doc__, "amortized")
    p.add_argument("--configs", type=Path, default=CONFIGS, help="full/amnet/amnet-noam.yaml")
    p.add_argument("--max-utts", type=int, default=0, help="utterances per split (0: all)")
    p.add_argument("--runs", type=Path, default=Path("runs/amortized"), help="training runs")
    p.add_argument(
        "--device-mflops",
        type=float,
        default=0.0,
        help="simulated device speed (default: the configs' device_mflops)",
    )
    p.add_argument(
        "--trained",
        action="append",
        default=[],
        metavar="NAME=RUN",
        help="take amnet or amnet-noam from a run trained elsewhere (RUN: best/, metrics.jsonl)",
    )
    args = p.parse_args(argv)
    elsewhere = trained_runs(args.trained)
    limit_threads(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    set_torch_threads(2)
    from edgeasr.model.cost import speech_ends
    from edgeasr.train.config import load_experiment
    from edgeasr.train.data import FeatureCache, cuts_path

    full_cfg = load_experiment(args.configs / "full.yaml")
    mflops = args.device_mflops or full_cfg.model.device_mflops
    dirs: dict[str, Path] = {"full": train("full", full_cfg, args.corpus, args.runs)}
    run_of = {name: args.runs / name for name in MODELS} | elsewhere
    amnet_cfg = None
    for name in ("amnet", "amnet-noam"):
        cfg = load_experiment(args.configs / f"{name}.yaml")
        cfg.train.init_weights_from = str(dirs["full"])
        if name in elsewhere:
            dirs[name] = elsewhere[name] / "best"
        else:
            dirs[name] = train(name, cfg, args.corpus, args.runs)
        # the baselines fine-tune with this config's schedule, also when amnet came from elsewhere
        amnet_cfg = amnet_cfg or cfg

    feats = args.corpus / "feats"
    caches = {s: FeatureCache.build(cuts_path(args.corpus, s), feats) for s in SPLITS}
    for cache in caches.values():
        cache.utts = even_subset(cache.utts, args.max_utts)
    ends = {s: speech_ends(cuts_path(args.corpus, s)) for s in SPLITS}
    results: dict[str, dict] = {}

    def measured(name: str) -> dict:
        """Evaluate a model once; a stored result counts for the same model at the same speed
        (results stored before the model's path was kept are this run directory's own)."""
        f = args.runs / name / "bench.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        model = str(dirs[name].resolve())
        if f.exists():
            stored = json.loads(f.read_text())
            if stored.get("mflops") == mflops and stored.get("model", model) == model:
                return stored["results"]
        res = evaluate(dirs[name], caches, ends, mflops, args.beam)
        f.write_text(json.dumps({"mflops": mflops, "model": model, "results": res}))
        return res

    for name in ("full", "amnet", "amnet-noam"):
        results[name] = measured(name)
        log.info("%s: %s", name, {s: results[name][s]["wer"] for s in SPLITS})
    # equal-cost single encoders: as many multiply-adds per frame as the branched model's average
    target = results["amnet"]["test"]["mean_macs_per_frame"]
    parts = cost_parts(full_cfg)
    rank = max(1, round((target - parts["input"] - parts["fixed"]) / parts["per_rank"]))
    low_cfg = load_experiment(args.configs / "full.yaml")
    low_cfg.name = "amortized-lowrank"
    low_cfg.model.branches = [dict(low_cfg.model.branches[0], rank=rank)]
    fine_tune_schedule(low_cfg, amnet_cfg)
    low_cfg.train.init_weights_from = str(dirs["full"])
    dirs["lowrank"] = train("lowrank", low_cfg, args.corpus, args.runs)
    # pruning covers the whole branch (LSTM and output matrices), not the input projection
    branch = parts["fixed"] + parts["lstm"]
    sparsity = min(0.99, max(0.0, 1.0 - (target - parts["input"]) / branch))
    from edgeasr.compress.training import CompressionConfig

    sp_cfg = load_experiment(args.configs / "full.yaml")
    sp_cfg.name = "amortized-sparse"
    fine_tune_schedule(sp_cfg, amnet_cfg)
    sp_cfg.train.init_weights_from = ""  # the fine-tune starts from full via init_from
    sp_cfg.train.compression = CompressionConfig.from_dict(
        {
            "init_from": str(dirs["full"]),
            "only": "encoder.branches.",
            "prune": {"target": round(sparsity, 4), "start_frac": 0.0, "end_frac": 0.6},
        }
    )
    dirs["sparse"] = train("sparse", sp_cfg, args.corpus, args.runs)
    for name in ("lowrank", "sparse"):
        results[name] = measured(name)
        log.info("%s: %s", name, {s: results[name][s]["wer"] for s in SPLITS})

    routing = {n: routing_epochs(run_of[n]) for n in ("amnet", "amnet-noam")}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    trace_png = args.out_dir / f"{args.name}.png"
    utt_id = trace_plot(
        {n: dirs[n] for n in ("full", "amnet", "amnet-noam", "lowrank")},
        caches["test"],
        ends["test"],
        mflops,
        trace_png,
    )
    latency_plot(results, args.out_dir / f"{args.name}_latency.png")

    base = results["full"]
    rows = []
    for name in MODELS:
        r = results[name]
        t = r["test"]
        rows.append(
            [
                name,
                f"{r['params'] / 1e6:.2f} M",
                f"{t['mean_macs_per_frame'] / 1e6:.2f} M",
                pct(1 - t["mean_macs_per_frame"] / base["test"]["mean_macs_per_frame"]),
                pct(t["fast_share"]),
                pct(t["wer"], 2),
                pct(r["test_xengine"]["wer"], 2),
                f"{2 * t['mean_macs_per_frame'] / (mflops * 1e6) / 0.08:.2f}",
                f"{1000 * t['latency_p50_s']:.0f} / {1000 * t['latency_p90_s']:.0f} / "
                f"{1000 * t['latency_max_s']:.0f} ms",
            ]
        )
    am, wer0 = results["amnet"]["test"], base["test"]["wer"]
    saving = 1 - am["mean_macs_per_frame"] / base["test"]["mean_macs_per_frame"]
    rel = am["wer"] / wer0 - 1 if wer0 else float("nan")
    equal = [results[n]["test"]["latency_p90_s"] for n in ("lowrank", "sparse")]
    ratio = min(equal) / am["latency_p90_s"] if am["latency_p90_s"] > 0 else float("inf")
    bars = [
        f"- {'PASS' if saving >= 0.45 and rel <= 0.03 else 'FAIL'}: amnet uses {pct(saving)} fewer "
        f"multiply-adds per frame than full (bar ≥ 45%) at {pct(rel)} relative WER change on "
        f"test (bar ≤ +3%).",
        f"- {'PASS' if am['latency_p90_s'] <= 0.010 and ratio >= 10 else 'FAIL'}: amnet's "
        f"end-of-speech latency p90 is {1000 * am['latency_p90_s']:.1f} ms (bar ≤ 10 ms); the "
        f"equal-cost single encoders' p90 is {ratio:.1f}x that (bar ≥ 10x).",
    ]
    try:
        configs = args.configs.resolve().relative_to(REPO_ROOT)
    except ValueError:
        configs = args.configs
    origin = (
        f"full = `{full_cfg.train.init_weights_from}` unchanged (its trained encoder moved into "
        f"this layout, not trained here), and the others start from it; "
        if full_cfg.train.epochs == 0
        else ""
    )
    for name, run in elsewhere.items():
        exp = yaml.safe_load((run / "config.yaml").read_text())
        origin += (
            f"{name} = trained outside this command (run `{run}`, experiment "
            f"`{exp['name']}`; see its config), not with `{configs}/{name}.yaml`; "
        )
    page = ResultsPage(
        args.name, "Amortized encoder: compute, accuracy and latency on a simulated device"
    )
    page.add(
        f"Simulated device: one thread at {mflops:g} MFLOP/s; 80 ms frames arrive in real time "
        f"and are encoded in order; latency = from the arrival of the frame that holds the end "
        f"of speech to the moment it is encoded (`edgeasr simulate`, `runtime/devicesim.py`). "
        f"Multiply-adds count non-zero encoder weights per frame (shared input projection and "
        f"arbitrator included). WER: modified beam search, beam {args.beam}, no blank penalty, "
        f"all of test ({len(caches['test'].utts)}) and test_xengine "
        f"({len(caches['test_xengine'].utts)}). Models: `{configs}/*.yaml`; {origin}"
        f"lowrank = rank {rank} (truncated SVD of full, fine-tuned), sparse = "
        f"{pct(sparsity)} of the encoder branch's weights pruned (fine-tuned), both matched to "
        f"amnet's average cost on test."
    )
    page.add("## Bars (issue 5)\n\n" + "\n".join(bars))
    hdr = [
        "model",
        "params",
        "MACs/frame",
        "saved vs full",
        "fast frames",
        "WER test",
        "WER xengine",
        "compute / real time",
        "latency p50 / p90 / max",
    ]
    page.add("## Results (test unless marked)\n\n" + markdown_table(hdr, rows, "lrrrrrrrr"))
    for name, eps in routing.items():
        body = [
            [
                e["epoch"],
                f"{e['temperature']:.3f}",
                pct(e["hard_share"][1]),
                " ".join(f"{v:.2f}" for v in e["branch0_weight_hist"]),
                pct(e["dev_wer"], 2),
            ]
            for e in eps
        ]
        page.add(
            f"## Routing per training epoch: {name}\n\nHistogram: share of training frames by "
            f"the weight the arbitrator gave the full branch, 10 bins from 0 to 1 (binary "
            f"choices put everything in the end bins).\n\n"
            + markdown_table(
                ["epoch", "temperature", "fast (argmax)", "weight histogram", "dev WER (greedy)"],
                body,
                "rrrlr",
            )
        )
    page.add(
        f"![routing and backlog over test utterance {utt_id}]({trace_png.name})\n\n"
        f"![latency distribution]({args.name}_latency.png)"
    )
    page.data = {
        "mflops": mflops,
        "rank": rank,
        "sparsity": sparsity,
        "results": {n: {k: v for k, v in r.items()} for n, r in results.items()},
        "routing": routing,
    }
    md, _ = page.write(args.out_dir)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
