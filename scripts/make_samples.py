"""Copy a few test-split utterances (voices never seen in training) into samples/ for `make demo`.

Usage: .venv/bin/python scripts/make_samples.py --corpus data/corpus --out samples
Picks, deterministically, utterances from different engines and accents, including one with a
mid-sentence pause, and writes 16-bit WAVs plus references.tsv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf
from lhotse import CutSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("samples"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    wanted = {("test", "espeak"): 3, ("test", "flite"): 1, ("test_xengine", "festival"): 2}
    for split in ("test", "test_xengine"):
        cuts = CutSet.from_file(args.corpus / "manifests" / f"{split}_cuts.jsonl.gz")
        seen_accents: set[str] = set()
        paused = False
        for cut in cuts:
            sup = cut.supervisions[0]
            engine = sup.custom["engine"]
            key = (split, engine)
            if wanted.get(key, 0) <= 0:
                continue
            accent = sup.speaker.split(":")[1].split("+")[0]
            has_pause = bool(sup.custom.get("pauses_s"))
            if engine == "espeak" and (accent in seen_accents or (not paused and not has_pause)):
                continue
            wanted[key] -= 1
            seen_accents.add(accent)
            paused = paused or has_pause
            name = f"{split}-{engine}-{len(rows):02d}.wav"
            sf.write(args.out / name, cut.load_audio()[0], 16000, subtype="PCM_16")
            rows.append((name, sup.text, sup.speaker))
    with (args.out / "references.tsv").open("w") as fh:
        fh.write("file\ttext\tvoice\n")
        for r in rows:
            fh.write("\t".join(r) + "\n")


if __name__ == "__main__":
    main()
