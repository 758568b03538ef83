"""Device-run benchmark: what one run of ``scripts/device_train.sh`` on a lent GPU bought,
measured here on the test splits against the model it started from.

The device script trains models side by side on one GPU for the same wall-clock budget, all
from the same starting package (the bundled model of the commit that ran it), at least these two:

* *continued fp32*: ``edgeasr train --config configs/small-gpu-continue.yaml`` (more updates for
  an underfitting model);
* *QAT int8 + 50% 8x1*: ``edgeasr compress --config configs/compress-gpu.yaml --bits 8
  --sparsity 0.5 --block 8x1`` (issue 4's combined compression, on the whole training set).

So the compressed model can be compared both with the fp32 model it was compressed from and
with an fp32 model that got the very same extra training (same data, time and GPU). The
script's outputs unpack into ``--runs``: ``train-best/`` and ``compress-best/`` (packages),
``compress.pack`` (the packed file) and ``runs/<dir>/<run>/metrics.jsonl``. ``--base`` is the
starting package (for a past run: ``git show COMMIT:models/edgeasr-small-en/FILE``). Further
fp32 runs of the same session (the script's ``TRAINS``) are added as rows with
``--extra NAME=LABEL``: package ``NAME-best/``, metrics ``runs/*/NAME/metrics.jsonl``.

Every model gets its blank penalty tuned on ``dev`` here (a copy of the package; the sweep of
``edgeasr tune-decoding``), then WER on ``test`` and ``test_xengine`` (modified beam search,
beam 4); the compressed model is measured on the packed file's weights (unpacked). Writes
docs/results/device-runs.{md,json}.

    .venv/bin/python benchmarks/device_runs.py --corpus data/corpus --base runs/old-bundled \\
        --runs runs/device
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ResultsPage,
    benchmark_parser,
    limit_threads,
    markdown_table,
    pct,
    set_torch_threads,
    shown_path,
    wer_of,
)

SPLITS = ("test", "test_xengine")
PENALTIES = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
MAX_WER_INCREASE = 0.05  # issue 4: QAT int8 + 50% sparse within 5% (relative) of fp32
MAX_BYTES_RATIO = 1 / 8  # ... in at most 1/8 of the fp32 bytes


def _run_facts(metrics_file: Path) -> dict[str, Any]:
    """Length of a device run (all its steps and seconds), from its metrics log."""
    evals = [
        r for r in (json.loads(x) for x in metrics_file.read_text().splitlines()) if "dev_wer" in r
    ]
    return {"run_steps": evals[-1]["step"], "train_s": evals[-1]["elapsed_s"]}


def _package_facts(pkg: Path) -> dict[str, Any]:
    """The step a package was chosen at (its run's best dev evaluation), from its manifest."""
    info = json.loads((pkg / "manifest.json").read_text()).get("info", {})
    return {"steps": info.get("step", "–")}


def main() -> None:
    ap = benchmark_parser(__doc__, "device-runs")
    ap.add_argument("--base", type=Path, required=True, help="the package both runs started from")
    ap.add_argument("--runs", type=Path, default=Path("runs/device"), help="unpacked outputs")
    ap.add_argument("--work", type=Path, default=Path("runs/device-eval"), help="tuned copies")
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=LABEL",
        help="another fp32 run of the session: package NAME-best/ in --runs, shown as LABEL",
    )
    args = ap.parse_args()
    extras = [e.split("=", 1) for e in args.extra]
    if any(len(e) != 2 or not (args.runs / f"{e[0]}-best").is_dir() for e in extras):
        ap.error(f"--extra wants NAME=LABEL with a package NAME-best/ in {args.runs}")
    limit_threads(2)
    set_torch_threads(2)
    from edgeasr.compress.convert import unpack_model
    from edgeasr.decode import tune_blank_penalty
    from edgeasr.train.data import FeatureCache, cuts_path

    caches = {
        s: FeatureCache.build(cuts_path(args.corpus, s), args.corpus / "feats")
        for s in ("dev", *SPLITS)
    }
    args.work.mkdir(parents=True, exist_ok=True)
    packed = args.runs / "compress.pack"

    def metrics_of(run: str) -> Path:
        found = sorted(args.runs.glob(f"runs/*/{run}/metrics.jsonl"))
        if not found:
            sys.exit(f"no runs/*/{run}/metrics.jsonl in {args.runs}")
        return found[0]

    def fp32(run: str) -> tuple[Path, Path, Path, Path]:
        pkg = args.runs / f"{run}-best"
        return pkg, pkg / "model.safetensors", pkg, metrics_of(run)

    # name: (package evaluated, file whose bytes count, package trained, its run's metrics)
    models = {
        "fp32, bundled (start)": (args.base, args.base / "model.safetensors", args.base, None),
        "fp32, continued on the GPU": fp32("train"),
        "QAT int8 + 50% 8x1, on the GPU": (
            unpack_model(packed, args.work / "compress.unpacked"),
            packed,
            args.runs / "compress-best",
            metrics_of("compress"),
        ),
        **{label: fp32(name) for name, label in extras},
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, (pkg, weights_file, trained, metrics) in models.items():
        tuned = args.work / f"tuned-{len(rows)}"
        shutil.rmtree(tuned, ignore_errors=True)
        shutil.copytree(pkg, tuned)
        penalty, sweep = tune_blank_penalty(tuned, caches["dev"], PENALTIES, args.beam)
        res = wer_of(tuned, {s: caches[s] for s in SPLITS}, args.beam, 0)
        res.update(
            bytes=weights_file.stat().st_size,
            blank_penalty=penalty,
            dev_wer=sweep[penalty],
            **_package_facts(trained),
            **(_run_facts(metrics) if metrics else {}),
        )
        rows[name] = res
        print(name, json.dumps(res), flush=True)

    base, cont, comp = (rows[k] for k in list(models)[:3])
    table = []
    for name, r in rows.items():
        table.append(
            [
                name,
                f"{r['bytes']:,}",
                f"1/{base['bytes'] / r['bytes']:.2f}",
                r["steps"],
                f"{r['run_steps']} in {r['train_s']:.0f} s" if "train_s" in r else "–",
                r["blank_penalty"],
                pct(r["dev_wer"], 2),
                pct(r["wer_test"], 2),
                pct(r["wer_test_xengine"], 2),
                pct(r["wer_all"], 2),
                f"{100 * (r['wer_all'] / base['wer_all'] - 1):+.1f}%",
                f"{100 * (r['wer_all'] / cont['wer_all'] - 1):+.1f}%",
            ]
        )
    bytes_ok = comp["bytes"] <= MAX_BYTES_RATIO * base["bytes"]
    vs_base = comp["wer_all"] / base["wer_all"] - 1
    vs_cont = comp["wer_all"] / cont["wer_all"] - 1
    page = ResultsPage(args.name, "What a lent-GPU run bought (scripts/device_train.sh)")
    page.add(
        f"Starting package: `{shown_path(args.base)}`. Device outputs: `{shown_path(args.runs)}`. "
        "The GPU runs started from that package (unless their label names another start) and "
        "trained side by side on one GPU for the "
        "same wall-clock budget (their length below; *step chosen*: the step of the best dev "
        "evaluation, which is the package); WER here, on this "
        "machine, with each model's blank penalty tuned on `dev` (modified beam search, beam "
        f"{args.beam}). Bytes: fp32 safetensors, or the packed file. *all* pools `test` and "
        "`test_xengine`."
    )
    page.add(
        markdown_table(
            [
                "model",
                "bytes",
                "vs fp32",
                "step chosen",
                "GPU run (steps, time)",
                "blank pen.",
                "dev",
                "test",
                "test_xengine",
                "all",
                "vs start",
                "vs continued fp32",
            ],
            table,
        )
    )
    page.add(
        "Issue 4's bar for QAT int8 + 50% sparsity (at most 1/8 of the fp32 bytes, WER within "
        "5% relative of fp32):\n\n"
        f"- **{'PASS' if bytes_ok else 'FAIL'}** bytes {comp['bytes']:,} = "
        f"1/{base['bytes'] / comp['bytes']:.2f} of fp32\n"
        f"- **{'PASS' if vs_base <= MAX_WER_INCREASE else 'FAIL'}** WER vs the fp32 model it "
        f"was compressed from: {100 * vs_base:+.1f}%\n"
        f"- **{'PASS' if vs_cont <= MAX_WER_INCREASE else 'FAIL'}** WER vs the fp32 model "
        f"given the same extra training: {100 * vs_cont:+.1f}% (the fair comparison: part of "
        "the compressed model's gain over its start is the extra training, not compression)"
    )
    page.data = {"rows": rows, "splits": list(SPLITS), "penalties": PENALTIES}
    md, _ = page.write(args.out_dir)
    print(page.markdown())
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
