#!/usr/bin/env bash
# Train the bundled model's recipe on a lent accelerator machine (fresh, offline, Python 3.12
# with torch, no TTS engines) inside one fixed wall-clock window.
#
# Prepared here, carried there (ignored folder .devkit/):
#   .devkit/whl/   cp312 wheels of what the image lacks (lhotse, kaldi-native-fbank, jiwer, ...)
#   .devkit/tts.txz  the files of this machine's Debian TTS packages and their libraries
# On the device: TTS files are added where missing (never replacing the image's own), the
# corpus is synthesised there with the same engines and seed (so it is the corpus built here),
# features are cached with all cores, and `edgeasr train` runs with a time budget that ends
# before DEADLINE_S. The best package and the run's logs go to $OUT.
set -uo pipefail
DEADLINE_S=${DEADLINE_S:-565}
HOURS_FIRST=${HOURS_FIRST:-10}  # always synthesised; extended to HOURS if time allows
HOURS=${HOURS:-20}
CONFIG=${CONFIG:-configs/small-gpu.yaml}
CORPUS=${CORPUS:-data/corpus}
RUN=${RUN:-runs/device}
PY=${PY:-python3}
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(el)s] $*"; }
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -z "${SKIP_SETUP:-}" ]; then  # SKIP_SETUP=1: a dry run on a machine that has it all
  nvidia-smi -L
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devkit/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
  mkdir -p /tmp/ttsx && tar -xJf .devkit/tts.txz -C /tmp/ttsx && cp -an /tmp/ttsx/. / && ldconfig
fi
espeak-ng --stdout -v en-us "call jonathan" | wc -c
flite -t "call jonathan" -o /tmp/f.wav && wc -c </tmp/f.wav
echo "call jonathan" | text2wave -o /tmp/t.wav && wc -c </tmp/t.wav
log "tts ready"
JOBS=$(nproc)
$PY -m edgeasr.cli corpus synth --out "$CORPUS" --hours "$HOURS_FIRST" --seed 1 --jobs "$JOBS" >"$OUT/synth.log" 2>&1
tr '\r' '\n' <"$OUT/synth.log" | grep -v "%|" | tail -4
log "corpus $HOURS_FIRST h"
if [ "$HOURS" != "$HOURS_FIRST" ] && [ "$(el)" -lt 150 ]; then
  $PY -m edgeasr.cli corpus synth --out "$CORPUS" --hours "$HOURS" --seed 1 --jobs "$JOBS" >>"$OUT/synth.log" 2>&1
  log "corpus $HOURS h"
fi
cp "$CORPUS/corpus.json" "$OUT/"
sha256sum "$CORPUS"/manifests/*_cuts.jsonl.gz | tee "$OUT/manifests.sha256"
$PY - "$JOBS" "$CORPUS" <<'PY'
import sys
from pathlib import Path
from edgeasr.train.data import FeatureCache, cuts_path
c = Path(sys.argv[2])
for split in ("train", "dev"):
    FeatureCache.build(cuts_path(c, split), c / "feats", jobs=int(sys.argv[1]))
PY
log "features cached"
BUDGET=$(( DEADLINE_S - $(el) - 45 ))
[ "$BUDGET" -lt 60 ] && BUDGET=60
$PY - "$CONFIG" "$BUDGET" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["train"]["time_budget_s"] = float(sys.argv[2])
yaml.safe_dump(cfg, open("/tmp/device.yaml", "w"))
PY
log "training for $BUDGET s"
timeout -s INT $(( BUDGET + 35 )) $PY -m edgeasr.cli train --config /tmp/device.yaml --corpus "$CORPUS" --out "$RUN" >"$OUT/train.log" 2>&1
tr '\r' '\n' <"$OUT/train.log" | grep -v "%|" | tail -30
log "training ended"
cp "$RUN/metrics.jsonl" "$OUT/" 2>/dev/null  # at most 8 files come back
mkdir -p "$OUT/best" && cp "$RUN"/best/* "$OUT/best/" 2>/dev/null
ls -la "$OUT" "$OUT/best"
log done
