"""Carry a branched model's trained branches to a lent GPU machine without the whole package.

The working tree that travels to the device is limited to 64 MiB, and a model package is about
17 MB, so a stage-1 package (a lean branch trained against the frozen bundled model) is sent as
the tensors that differ from the bundled model instead, and rebuilt there:

    # here: the tensors of the given prefixes (default: branch 1 and the arbitrator)
    .venv/bin/python scripts/branch_tensors.py save --package runs/s23/lean/best \\
        --out runs/s23/carry/lean-branch.safetensors
    # there: the bundled model in the config's layout, then those tensors on top
    python3 scripts/branch_tensors.py rebuild --base models/edgeasr-small-en \\
        --config configs/amortized-gpu/lean-pretrain.yaml \\
        --tensors runs/s23/carry/lean-branch.safetensors --out runs/s23/lean/best

``rebuild`` refuses tensors that do not fill exactly what the base leaves fresh, so the result
holds the saved package's tensors exactly (checked before the stop-23 device call).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def save(package: Path, out: Path, prefixes: list[str]) -> None:
    from safetensors.torch import save_file

    from edgeasr.model.checkpoint import load_package

    state = load_package(package)[0].state_dict()
    keep = {k: v.contiguous() for k, v in state.items() if k.startswith(tuple(prefixes))}
    if not keep:
        raise SystemExit(f"{package} has no tensor starting with {prefixes}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(keep, str(out))
    print(f"{len(keep)} tensors ({sum(v.numel() for v in keep.values())} values) -> {out}")


def rebuild(base: Path, config: Path, tensors: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from edgeasr.model.amortized import start_weights, transplant
    from edgeasr.model.checkpoint import load_package, save_package
    from edgeasr.model.transducer import Transducer
    from edgeasr.train.config import load_experiment

    source, tok, _ = load_package(base)
    cfg = load_experiment(config)
    cfg.model.vocab_size = tok.vocab_size
    model = Transducer(cfg.model)
    report = transplant(model, start_weights(model, source))
    extra = load_file(str(tensors))
    if set(report["fresh"]) != set(extra):
        raise SystemExit(
            f"{tensors} does not fill what {base} leaves fresh: "
            f"{sorted(set(report['fresh']) ^ set(extra))[:4]}"
        )
    state = model.state_dict()
    with torch.no_grad():
        for name, value in extra.items():
            state[name].copy_(value)
    save_package(model, tok, out)
    print(f"rebuilt {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("--package", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--prefix", nargs="+", default=["encoder.branches.1.", "encoder.arbitrator."])
    r = sub.add_parser("rebuild")
    r.add_argument("--base", type=Path, required=True)
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--tensors", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "save":
        save(args.package, args.out, args.prefix)
    else:
        rebuild(args.base, args.config, args.tensors, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
