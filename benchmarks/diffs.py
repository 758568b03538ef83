"""Model-update benchmark: five chained updates shipped as full models or as neural diffs.

The scenario is ``data/updates/v1 … v5`` (`edgeasr corpus updates`): each update brings new
names, new command types and new voices, with an equal replay of the base training data. For
each method the device starts from the bundled model (v0) in a :class:`ModelStore`; update ``k``
is trained on the server from the model the device *has* (``configs/update.yaml``, with
`edgeasr diff train`'s methods), turned into a signed diff (`edgeasr diff make`), and applied
through the device's own verify-and-swap path; the next update starts from that result. So every
WER below is the WER of the model the device ends up running, after lossy encodings included.

- **full fine-tune**: every weight trained, shipped as the whole fp32 file, or zstd-compressed,
  or as a ``binary`` diff (``zstd --patch-from`` style: a delta of the weight bytes against the
  model the device has) — three ways to ship the same models;
- **sparse d%**: W = W_base + δ, δ pruned on a cubic schedule to d % of each matrix's weights;
  shipped as positions + int8 changes, zstd;
- **hash d%**: δ tied into d % × weights hashed buckets (HashedNets, sign hash); only buckets;
- **LoRA d%**: δ = B·A with factors holding d % of each matrix's weights (the low-rank baseline
  at the hash diff's byte budget).

Runs already in ``--runs`` are reused, so an interrupted benchmark resumes. Writes
docs/results/diffs.{md,json,png}.

    .venv/bin/python benchmarks/diffs.py --corpus data/corpus --updates data/updates
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    shown_path,
    slug,
    wer_of,
)

log = logging.getLogger("diffs")


@dataclass
class Method:
    name: str
    train: str  # edgeasr.compress.training.diff_experiment method ("full": every weight)
    density: float
    ship: str  # edgeasr.update.diff method the device receives
    # A sparse diff's LR multiplier when it differs from the config's sparse_lr_scale: the
    # fewer weights change, the further each must move (4% density: chosen at 8x on update 1)
    lr_scale: float | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return slug(self.name)


def methods() -> list[Method]:
    return [
        Method("full fine-tune", "full", 0.0, "binary"),
        Method("sparse 10%", "sparse", 0.10, "sparse"),
        Method("sparse 4%", "sparse", 0.04, "sparse", lr_scale=8.0),
        Method("sparse 2%", "sparse", 0.02, "sparse"),
        Method("sparse 1%", "sparse", 0.01, "sparse"),
        Method("hash 1.5%", "hash", 0.015, "hash"),
        Method("LoRA 1.5%", "lowrank", 0.015, "lowrank"),
    ]


def control_of(updates: Path) -> str:
    """The control the update corpora stand for (`edgeasr corpus null-updates` writes it into
    each ``update.json``), or "" for the real scenario."""
    info = updates / "v1" / "update.json"
    return json.loads(info.read_text()).get("control", "") if info.is_file() else ""


def signing_key(runs: Path):
    """The benchmark's update key (made once, kept in ``runs`` so a resumed run agrees)."""
    from edgeasr.update.diff import load_private_key, new_signing_key, private_key_bytes

    path = runs / "update.key"
    if not path.exists():
        runs.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(private_key_bytes(new_signing_key()))
    return load_private_key(path.read_bytes())


def evaluate(model_dir: Path, caches: dict[str, Any], k: int, args) -> dict[str, Any]:
    """WER on the original test set and on the new material of updates 1..k (pooled: all the
    device has been taught so far) and of update k alone."""
    splits = {s: caches[s] for s in ["test", *_news(k)]}
    res = wer_of(model_dir, splits, args.beam, args.max_utts, per_utterance=("test",))
    out = {"wer_test": res["wer_test"], "test_errors": res["errors_test"], "per_update": {}}
    for s in _news(k):
        out["per_update"][s] = {"wer": res[f"wer_{s}"], "words": res[f"words_{s}"]}
    if k:
        out["wer_new"] = pooled(out["per_update"], k)
        out["wer_this"] = res[f"wer_u{k}"]
    return out


def with_test_errors(result: dict[str, Any], model_dir: Path, caches, args, file: Path) -> None:
    """Add the original test's per-utterance errors to a result saved before they were kept,
    by decoding the same model again (it must reproduce the saved WER), and save it."""
    if "test_errors" in result or not (model_dir / "model.safetensors").is_file():
        return
    res = wer_of(model_dir, {"test": caches["test"]}, args.beam, args.max_utts, ("test",))
    if abs(res["wer_test"] - result["wer_test"]) > 1e-9:
        raise RuntimeError(f"{file}: {model_dir} no longer gives the saved original-test WER")
    result["test_errors"] = res["errors_test"]
    file.write_text(json.dumps(result, indent=1) + "\n")


def vs_v0(step: dict[str, Any], v0: dict[str, Any]) -> str:
    """Original-test change against v0, with the 95 % interval of a paired bootstrap over the
    test's utterances where both sides kept their per-utterance errors."""
    from edgeasr.decode import relative_change_ci

    text = f"{step['wer_test'] / v0['wer_test'] - 1:+.1%}"
    if "test_errors" in step and sum(v0.get("test_errors", [])) > 0:
        _, lo, hi = relative_change_ci(v0["test_errors"], step["test_errors"])
        text += f" ({lo:+.1%} .. {hi:+.1%})"
    return text


def _news(k: int) -> list[str]:
    return [f"u{j}" for j in range(1, k + 1)]


def pooled(per_update: dict[str, dict[str, float]], k: int) -> float:
    """WER over the new material of updates 1..k together (errors / words)."""
    parts = [per_update[s] for s in _news(k)]
    return sum(p["wer"] * p["words"] for p in parts) / sum(p["words"] for p in parts)


def engine_of(speaker: str) -> str:
    """The TTS engine of a corpus voice id (``engine:voice``)."""
    return speaker.split(":")[0] or "unknown"


def by_engine(errors: list[int], utts: list[Any]) -> dict[str, float]:
    """Original-test WER per TTS engine of the speaking voice (the speaker id's prefix: `flite`
    of `flite:rms`). The test's voices are all unseen in training, and updates whose new voices
    are all of one engine (espeak-ng) can cost the unseen voices of another engine most, which
    the pooled WER hides."""
    if len(errors) != len(utts):
        raise ValueError(f"{len(errors)} per-utterance error counts for {len(utts)} utterances")
    errs: dict[str, int] = {}
    words: dict[str, int] = {}
    for e, u in zip(errors, utts, strict=True):
        engine = engine_of(u.speaker)
        errs[engine] = errs.get(engine, 0) + e
        words[engine] = words.get(engine, 0) + len(u.text.split())
    return {g: errs[g] / words[g] for g in sorted(words) if words[g]}


def voices_note(args, utts: list[Any]) -> str:
    """Which of the test's voices training heard, and which engines the updates' new voices are
    of, read from the corpora: what the engine table's reader needs to interpret it."""
    from lhotse import load_manifest_lazy

    from edgeasr.train.data import cuts_path

    heard = {c.supervisions[0].speaker for c in load_manifest_lazy(cuts_path(args.corpus, "train"))}
    test = {u.speaker for u in utts}
    out = (
        "None of the test's voices occurs in training."
        if not test & heard
        else f"{len(test & heard)} of the test's {len(test)} voices occur in training."
    )
    new = set()
    for k in range(1, args.updates_n + 1):
        info = args.updates / f"v{k}" / "update.json"
        if info.is_file():
            new |= {engine_of(v) for v in json.loads(info.read_text()).get("voices_new", [])}
    if new:
        out += f" The updates' new voices are {', '.join(sorted(new))} voices."
    return out


def run_chain(m: Method, base: Path, caches: dict[str, Any], key, args) -> None:
    """Train, ship and apply updates 1..N for one method (resuming finished steps)."""
    import zstandard

    from edgeasr.compress.training import diff_experiment
    from edgeasr.train.trainer import Trainer
    from edgeasr.update import ModelStore
    from edgeasr.update.diff import make_diff, read_diff

    root = args.runs / m.slug
    store = ModelStore(root / "device")
    if not store.current_link.is_symlink():
        store.install(base)
    m.steps = []
    for k in range(1, args.updates_n + 1):
        done = root / f"v{k}.json"
        if done.exists():
            step = json.loads(done.read_text())
            version = store.versions / step["result_sha256"][:16]
            with_test_errors(step, version, caches, args, done)
            m.steps.append(step)
            continue
        diff_file, run = root / f"v{k}.diff", root / f"v{k}"
        device_model = store.current
        if not diff_file.exists():
            cfg = diff_experiment(args.config, device_model, m.train, m.density, seed=k)
            if cfg.train.uses_replay_corpus and not cfg.train.replay_corpus:
                cfg.train.replay_corpus = str(args.corpus)  # rehearse the base corpus
            if args.max_steps:
                cfg.train.max_steps = args.max_steps
            if m.lr_scale is not None:
                cfg.train.compression.sparse_lr_scale = m.lr_scale
            Trainer(cfg, args.updates / f"v{k}", run).fit()
            # the trainer's own clock, which a resumed or reused run carries over
            train_s = json.loads((run / "ckpt" / "last.json").read_text())["elapsed_s"]
            data, _ = make_diff(
                device_model / "model.safetensors",
                run / "best" / "model.safetensors",
                key,
                m.ship,
                density=None if m.ship == "sparse" else (m.density or None),
                info={"update": k, "method": m.name},
                seed=k,
            )
            diff_file.write_bytes(data)
            (run / "train_s").write_text(f"{train_s:.1f}\n")
        data = diff_file.read_bytes()
        diff = read_diff(data, key.public_key())
        if store.current_digest() == diff.base_sha256:
            store.apply(data, key.public_key())
        if store.current_digest() != diff.result_sha256:
            raise RuntimeError(f"{root}: the device is on neither side of update {k}")
        new_model = store.current / "model.safetensors"
        step = {
            "update": k,
            "diff_bytes": len(data),
            "model_bytes": new_model.stat().st_size,
            "zstd_model_bytes": len(
                zstandard.ZstdCompressor(level=19).compress(new_model.read_bytes())
            ),
            "train_s": float((run / "train_s").read_text()),
            "result_sha256": diff.result_sha256,
            **evaluate(store.current, caches, k, args),
            "root": str(root),
        }
        done.write_text(json.dumps(step, indent=1) + "\n")
        log.info(
            "%s v%d: %s",
            m.name,
            k,
            {a: b for a, b in step.items() if a not in ("per_update", "test_errors")},
        )
        m.steps.append(step)


def rejection_checks(m: Method, key) -> list[tuple[str, bool, str]]:
    """Feed the device bad versions of the method's last diff: each must be rejected with a
    clear error and the model in use byte-identical (same version, same file bytes)."""
    from edgeasr.update import DiffError, ModelStore
    from edgeasr.update.diff import new_signing_key

    root = m.steps[-1]["root"]
    store = ModelStore(Path(root) / "device")
    data = (Path(root) / f"v{m.steps[-1]['update']}.diff").read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    signed = data[:-64]
    cases = {
        "truncated": data[: len(data) - 1000],
        "tampered (one bit flipped)": bytes(flipped),
        "signed by another key": signed + new_signing_key().sign(signed),
        "for another base (already applied)": data,
    }
    out = []
    for name, bad in cases.items():
        before = (store.current, (store.current / "model.safetensors").read_bytes())
        try:
            store.apply(bad, key.public_key())
            out.append((name, False, "accepted"))
            continue
        except DiffError as exc:
            reason = str(exc)
        after = (store.current, (store.current / "model.safetensors").read_bytes())
        out.append((name, before == after, reason))
    return out


def plot(ms: list[Method], v0: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for m in ms:
        if m.ship == "binary" and m.train == "full":
            label = "full fine-tune (any shipping)"
        else:
            label = m.name
        xs = [0] + [s["update"] for s in m.steps]
        axes[0].plot(xs[1:], [100 * s["wer_new"] for s in m.steps], marker="o", label=label)
        axes[1].plot(
            xs, [100 * v0["wer_test"]] + [100 * s["wer_test"] for s in m.steps], marker="o"
        )
        axes[2].plot(
            xs[1:], [100 * s["diff_bytes"] / s["model_bytes"] for s in m.steps], marker="o"
        )
    n = len(v0["per_update"])
    axes[0].plot(range(1, n + 1), [100 * pooled(v0["per_update"], k) for k in range(1, n + 1)],
                 "k--", lw=0.8, label="v0 (no update)")  # fmt: skip
    axes[0].set_title("new material so far (updates 1..k)")
    axes[1].set_title("original test set")
    axes[2].set_title("bytes shipped per update")
    axes[0].set_ylabel("WER (%)")
    axes[1].set_ylabel("WER (%)")
    axes[2].set_ylabel("% of the fp32 model file")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xticks(range(0 if ax is axes[1] else 1, n + 1))
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars(by: dict[str, Method], v0: dict[str, Any]) -> list[tuple[str, bool, str]]:
    full = by["full fine-tune"].steps[-1]
    out = []
    if "sparse 10%" in by:
        sp = by["sparse 10%"].steps[-1]
        out += [
            (
                "sparse 10% after five chained updates: new-material WER within 1% relative "
                "of full fine-tuning",
                sp["wer_new"] <= 1.01 * full["wer_new"],
                f"{pct(sp['wer_new'], 2)} vs {pct(full['wer_new'], 2)} "
                f"({sp['wer_new'] / full['wer_new'] - 1:+.1%})",
            ),
            (
                "... and original-set WER at most 2% relative worse than v0",
                sp["wer_test"] <= 1.02 * v0["wer_test"],
                f"{pct(sp['wer_test'], 2)} vs {pct(v0['wer_test'], 2)}: {vs_v0(sp, v0)}",
            ),
        ]
    small = []
    for m in by.values():
        worst = max(s["diff_bytes"] / s["model_bytes"] for s in m.steps)
        if worst <= 0.02:
            rel = m.steps[-1]["wer_new"] / full["wer_new"] - 1
            small.append((rel, m.name, worst))
    best = min(small) if small else None
    out.append(
        (
            "some method ships every update in at most 2% of the model's bytes with new-material "
            "WER within 5% relative of full fine-tuning",
            best is not None and best[0] <= 0.05,
            "no method at or below 2%"
            if best is None
            else f"best: {best[1]} (largest update {pct(best[2], 2)} of the model), "
            f"new-material WER {best[0]:+.1%} vs full fine-tuning",
        )
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = benchmark_parser(__doc__, "diffs")
    p.add_argument("--updates", type=Path, default=Path("data/updates"), help="update corpora")
    p.add_argument("--runs", type=Path, default=Path("runs/diffs"), help="training runs, stores")
    p.add_argument(
        "--config",
        type=Path,
        default=REPO_ROOT / "configs" / "update.yaml",
        help="fine-tuning YAML of every update",
    )
    p.add_argument("--updates-n", type=int, default=5, help="how many chained updates")
    p.add_argument("--max-utts", type=int, default=0, help="WER utterances per split (0: all)")
    p.add_argument("--max-steps", type=int, default=0, help="cap fine-tuning (smoke runs only)")
    p.add_argument("--only", nargs="*", default=None, help="method names (default: all)")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    set_torch_threads(2)
    from edgeasr.train.config import load_experiment
    from edgeasr.train.data import FeatureCache, cuts_path

    caches = {"test": FeatureCache.build(cuts_path(args.corpus, "test"), args.corpus / "feats")}
    for k in range(1, args.updates_n + 1):
        d = args.updates / f"v{k}"
        caches[f"u{k}"] = FeatureCache.build(cuts_path(d, "test"), d / "feats")
    key = signing_key(args.runs)
    v0_file = args.runs / "v0.json"
    v0 = json.loads(v0_file.read_text()) if v0_file.exists() else None
    if v0 is None or any(f"u{k}" not in v0["per_update"] for k in range(1, args.updates_n + 1)):
        # none yet, or from a run over fewer updates: v0 on every update's new material
        v0 = evaluate(args.model, caches, args.updates_n, args)
        v0_file.write_text(json.dumps(v0, indent=1) + "\n")
    with_test_errors(v0, args.model, caches, args, v0_file)
    table = methods() if args.only is None else [m for m in methods() if m.name in args.only]
    for m in table:
        log.info("method %s", m.name)
        run_chain(m, args.model, caches, key, args)
    by = {m.name: m for m in table}
    rejections = rejection_checks(table[-1], key)

    page = ResultsPage(args.name, "Model updates: full fine-tuning vs neural diffs, five in a row")
    tc = load_experiment(args.config).train
    comp = tc.compression
    own = ", ".join(f"{m.name} at {m.lr_scale:g}x" for m in table if m.lr_scale is not None)
    distilled_on = "the fresh replay" if tc.distill_on == "replay" else "all"
    # a fixed teacher or anchor (e.g. v0) holds every update to it; by default each update
    # keeps the behaviour of the model it starts from
    teacher = f"`{tc.distill_from}`" if tc.distill_from else "the model being updated"
    anchor = f"`{tc.ewc_anchor}`" if tc.ewc_anchor else "the model being updated"
    recipe = (
        (
            f"; each epoch also {tc.replay_utts} base utterances drawn afresh"
            if tc.replay_utts
            else ""
        )
        + (
            f"; distilled from {teacher} (full-vocabulary lattice KL, weight "
            f"{tc.distill_weight:g}, on {distilled_on} utterances)"
            if tc.distill_weight
            else ""
        )
        + (
            f"; EWC (weight {tc.ewc_weight:g}, anchored at and Fisher of {anchor} on "
            f"{tc.ewc_utts} base utterances, mean 1)"
            if tc.ewc_weight
            else ""
        )
        + (
            f"; only the parameters under {', '.join(f'`{p}`' for p in tc.train_only)} train"
            if tc.train_only
            else ""
        )
        + (
            f"; each utterance's mel axis warped by a factor in [{1 - warp:g}, {1 + warp:g}] "
            "(`spec_augment.freq_warp`)"
            if (warp := tc.spec_augment.freq_warp)
            else ""
        )
        + (
            f"; the mean of the trained weights over the last {tc.average_last_epochs} epochs' "
            "steps ships (`average_last_epochs`)"
            if tc.average_last_epochs
            else ""
        )
        + (
            f"; sparse diffs at {comp.sparse_lr_scale:g}x that LR{f' ({own})' if own else ''}, "
            f"hash and low-rank diffs at {comp.delta_lr_scale:g}x"
        )
    )
    shown_config = shown_path(args.config)
    model_bytes = (args.model / "model.safetensors").stat().st_size
    control = control_of(args.updates)
    scenario = (
        "the control chain's corpora, described below"
        if control
        else "`edgeasr corpus updates`: per update new names, new command types and new "
        "voices; 400 new-material training utterances, 300 replayed from the base corpus and "
        "100 from each earlier update"
    )
    page.add(
        f"Base v0: `{args.model}` ({model_bytes:,} bytes as fp32 safetensors). Updates: "
        f"`{args.updates}/v1..v{args.updates_n}` ({scenario}). Each update is "
        f"trained with `{shown_config}` ({tc.epochs} epochs, LR {tc.lr:g}{recipe}) from the "
        "model the device has, shipped as a signed diff and applied by the device's "
        "`ModelStore` (verify signature and base, apply, check the result hash, atomic swap); "
        "the next update "
        f"starts from that. WER: beam {args.beam} with the model card's blank penalty, on the "
        "device's model; *new* = the new-material test sets of updates 1..k pooled (120 "
        "utterances each, sentences not in training, half the update's new voices, half "
        "unseen test voices); *this* = update k's alone; *original* = the base test set "
        f"({'all' if not args.max_utts else args.max_utts} utterances); *vs v0* with the 95% "
        "interval of a paired bootstrap over its utterances (`edgeasr.decode."
        "relative_change_ci`), which says how fine a change this test set can resolve. Bytes: "
        "the diff file as sent (header, payload, signature)."
    )
    if control:
        page.add(
            f"**Control chain** ({control}; `edgeasr corpus null-updates`): these updates "
            "teach nothing new, so *WER original* measures what the fine-tuning recipe alone "
            "does to the base model, and the *new* columns score material this chain never "
            "trained on. Issue 6's bars are for the real updates and are not checked here."
        )
    elif "full fine-tune" in by:
        page.add(
            "## Bars (issue 6)\n\n"
            + "\n".join(
                f"- **{'PASS' if ok else 'FAIL'}** {text}: {detail}"
                for text, ok, detail in bars(by, v0)
            )
            + "\n"
            + "\n".join(
                f"- **{'PASS' if ok else 'FAIL'}** rejected, device model byte-identical: {name} "
                f"(`{reason}`)"
                for name, ok, reason in rejections
            )
        )
    v0_new = [pooled(v0["per_update"], k) for k in range(1, args.updates_n + 1)]
    summary = []
    for m in table:
        last = m.steps[-1]
        ships = (
            [
                ("fp32 file", "model_bytes"),
                ("zstd -19", "zstd_model_bytes"),
                ("binary delta", "diff_bytes"),
            ]
            if m.train == "full"
            else [(m.ship, "diff_bytes")]
        )
        for how, field_ in ships:
            sizes = [s[field_] for s in m.steps]
            summary.append(
                [
                    m.name,
                    how,
                    f"{sum(sizes) / len(sizes):,.0f}",
                    pct(max(sizes) / model_bytes, 2),
                    pct(last["wer_new"], 2),
                    f"{last['wer_new'] / by['full fine-tune'].steps[-1]['wer_new'] - 1:+.1%}"
                    if "full fine-tune" in by
                    else "–",
                    pct(last["wer_test"], 2),
                    vs_v0(last, v0),
                ]
            )
    page.add(
        f"## After {args.updates_n} chained updates\n\n"
        f"v0: new-material WER {pct(v0_new[-1], 2)}, original test {pct(v0['wer_test'], 2)}.\n\n"
        + markdown_table(
            [
                "method",
                "shipped as",
                "mean bytes/update",
                "largest update, % of model",
                "WER new (1..5)",
                "vs full FT",
                "WER original",
                "vs v0 (95% interval)",
            ],
            summary,
        )  # fmt: skip
    )
    rows = []
    for m in table:
        for s in m.steps:
            rows.append(
                [
                    m.name,
                    f"v{s['update']}",
                    f"{s['diff_bytes']:,}",
                    pct(s["diff_bytes"] / s["model_bytes"], 2),
                    pct(v0_new[s["update"] - 1], 2),
                    pct(s["wer_new"], 2),
                    pct(s["wer_this"], 2),
                    pct(s["wer_test"], 2),
                    f"{s['train_s']:.0f}",
                ]
            )
    page.add(
        "## Every update\n\n"
        + markdown_table(
            [
                "method",
                "update",
                "diff bytes",
                "% of model",
                "WER new, v0",
                "WER new (1..k)",
                "WER this update",
                "WER original",
                "train s",
            ],
            rows,
        )  # fmt: skip
        + "\n\n*WER new, v0*: the base model on the same new material, for scale. The full "
        "fine-tune's diff column is its binary delta; as a whole file it ships "
        f"{model_bytes:,} bytes (fp32) every time."
    )
    utts = even_subset(caches["test"].utts, args.max_utts)  # the utterances decoded
    speakers: dict[str, list[str]] = {}  # engine -> the speaker of each of its utterances
    for u in utts:
        speakers.setdefault(engine_of(u.speaker), []).append(u.speaker)
    engines = sorted(speakers)
    head = []
    for g in engines:
        voices = sorted(set(speakers[g]))
        named = ", ".join(f"`{v}`" for v in voices) if len(voices) <= 2 else f"{len(voices)} voices"
        head.append(f"{g} ({len(speakers[g])} utts, {named})")
    eng_rows = [["v0", "–", *(pct(by_engine(v0["test_errors"], utts)[g], 2) for g in engines)]]
    for m in table:
        for s in m.steps:
            if "test_errors" in s:
                split = by_engine(s["test_errors"], utts)
                eng_rows.append([m.name, f"v{s['update']}", *(pct(split[g], 2) for g in engines)])
    page.add(
        "## The original test by the voice's TTS engine\n\n"
        "The original test's WER over the utterances of each engine's voices, from the same "
        f"decodes as *WER original*. {voices_note(args, utts)}\n\n"
        + markdown_table(["method", "update", *head], eng_rows)
    )
    page.add(f"![WER and bytes per update]({args.name}.png)")
    page.data = {
        "v0": v0,
        "methods": [
            {
                "name": m.name,
                "train": m.train,
                "density": m.density,
                "ship": m.ship,
                "steps": m.steps,
            }
            for m in table
        ],  # fmt: skip
        "rejections": [{"case": n, "ok": ok, "reason": r} for n, ok, r in rejections],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(table, v0, args.out_dir / f"{args.name}.png")
    md, _ = page.write(args.out_dir)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
