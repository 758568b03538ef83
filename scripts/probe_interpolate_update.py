"""Probe: does weight interpolation (WiSE-FT) trade forgetting for learning better than training
does?

An update's model v1 is blended back towards the model it started from, v0 + a·(v1 − v0), for
each ``--alphas`` value; every blend is decoded with ``edgeasr decode`` on the original test set
and on the update's new-material test set (beam 4, blank penalty 1.0, the bundled model's).

    .venv/bin/python scripts/probe_interpolate_update.py \\
        --update runs/diffs-s21-rehearse/full-fine-tune/device/versions/2cbc0929bff71d51 \\
        --alphas 1 0.95 0.9 0.75 0.5 0.25

Prints one line per blend; the packages and decodes stay under ``--work``. On the rehearse
recipe's first full fine-tune (stop 21) no blend beat the rehearsed sparse diff on both sets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from edgeasr.model.checkpoint import load_package, save_package


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=Path("models/edgeasr-small-en"), help="v0")
    ap.add_argument("--update", type=Path, required=True, help="the updated package v1")
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--new", type=Path, default=Path("data/updates/v1"), help="update corpus")
    ap.add_argument("--alphas", type=float, nargs="+", required=True)
    ap.add_argument("--work", type=Path, default=Path("runs/interpolate"))
    args = ap.parse_args()
    base, _, _ = load_package(args.base)
    model, tok, _ = load_package(args.update)
    # copies: a state dict shares storage with the model, which each blend overwrites
    w0 = {k: v.clone() for k, v in base.state_dict().items()}
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    if w0.keys() != w1.keys() or any(w0[k].shape != w1[k].shape for k in w0):
        sys.exit(f"{args.update} is not an update of {args.base}: the weights differ in shape")
    for a in args.alphas:
        out = args.work / f"a{a:g}"
        model.load_state_dict(
            {k: w0[k] + a * (w1[k] - w0[k]) if w1[k].is_floating_point() else w1[k] for k in w1}
        )
        save_package(model, tok, out, info={"interpolated": {"base": str(args.base), "a": a}})
        wer = {}
        for name, corpus in (("original", args.corpus), ("new", args.new)):
            dec = out / f"decode-{name}"
            cmd = [sys.executable, "-m", "edgeasr.cli", "decode", "--corpus", str(corpus)]
            cmd += ["--split", "test", "--model", str(out), "--blank-penalty", "1.0"]
            subprocess.run([*cmd, "--out", str(dec)], check=True, capture_output=True)
            wer[name] = json.loads((dec / "summary.json").read_text())["wer"]
        print(f"a = {a:g}: original test {wer['original']:.2%}, new material {wer['new']:.2%}")


if __name__ == "__main__":
    main()
