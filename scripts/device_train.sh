#!/usr/bin/env bash
# Train on a lent accelerator machine (fresh, offline, Python 3.12 with torch, no TTS engines)
# inside one fixed wall-clock window.
#
# Prepared here, carried there (ignored folder .devkit/):
#   .devkit/whl/     cp312 wheels of what the image lacks (lhotse, kaldi-native-fbank, jiwer, ...)
#   .devkit/tts.txz  this machine's espeak-ng and flite files and their libraries (English
#                    dictionaries only); festival is not needed: it only speaks test_xengine
# On the device: TTS files are added where missing (never replacing the image's own); the
# training corpus (train + dev; the test splits' sentences are still kept out of train) is
# synthesised there with the same engines and seed, so train is the corpus built here;
# features are cached with all cores; then the training runs of TRAINS and, when COMPRESS_ARGS
# is set, `edgeasr compress $COMPRESS_ARGS` run side by side on the one GPU, each with the time
# that is left before DEADLINE_S. Each run's best package comes back as a tar (in parts) in $OUT, with
# the logs and the GPU's use every 30 s (gpu.csv).
#
# TRAINS lists the training runs, NAME:CONFIG each, that share the GPU side by side. Measured
# on an H100 (2026-11-27): one run alone kept the GPU ~20% busy at 5.6 batches/s (it is bound
# by the host, not the GPU); three side by side kept it ~97% busy at 5.5 batches/s each, so up
# to three runs cost no more than one.
# Session of 2026-11-27 (one H100, 15 min of device time in all), 30 h of train, the plain
# continuation beside the one with a frequency warp, and the compression run:
#   DEADLINE_S=575 HOURS=30 TRAINS="train:configs/small-gpu-continue.yaml \
#     warp:configs/small-gpu-warp.yaml" OUT=$OUT \
#     COMPRESS_ARGS="--bits 8 --sparsity 0.5 --block 8x1" bash scripts/device_train.sh
# then, on the still-warm machine (the corpus is kept), 107 s more from the warp run's best:
#   DEADLINE_S=255 HOURS=30 RUNS=runs/device2 INIT=runs/device/warp/best LR=6e-4 \
#     TRAINS="warp2:configs/small-gpu-warp.yaml" OUT=$OUT bash scripts/device_train.sh
# (that call used a sed-edited copy of the config with the same two changes, warm-up 30 steps
# and dev evaluation every 2 epochs; it synthesised the corpus again, fixed since).
# Stop 23 (one H100, 15 min), issue 5, stage 2 only (10 h corpus, as built here): three joint
# runs from the lean branch pretrained on the CPU (configs/amortized-gpu/lean-pretrain.yaml),
# carried as its tensors (scripts/branch_tensors.py save; a whole package does not fit the
# 64 MiB carry beside .devkit) and rebuilt there first (carry .devkit and runs/s23/carry):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site0 .devkit/whl/*.whl;
#   PYTHONPATH=/tmp/site0 python3 scripts/branch_tensors.py rebuild --base models/edgeasr-small-en \
#     --config configs/amortized-gpu/lean-pretrain.yaml --tensors \
#     runs/s23/carry/lean-branch.safetensors --out runs/s23/lean/best &&
#   DEADLINE_S=520 HOURS=10 INIT=runs/s23/lean/best OUT=$OUT TRAINS="amnet:configs/amortized-gpu/\
#     amnet-joint.yaml lat:configs/amortized-gpu/amnet-joint-latency.yaml noam:configs/\
#     amortized-gpu/amnet-joint-noam.yaml" bash scripts/device_train.sh
# (its packages did not come back: the script then returned whole 17 MB tars, over the 16 MiB
# limit per file, and the machine was gone before a second call; now they come back in parts)
# Both stages on the device: TRAINS="amnet:configs/amortized-gpu/lean-pretrain.yaml,configs/\
#   amortized-gpu/amnet-joint.yaml" (STAGE1_PCT of the time for the first).
set -uo pipefail
DEADLINE_S=${DEADLINE_S:-545}
HOURS=${HOURS:-10}
TRAINS=${TRAINS:-train:configs/small-gpu-continue.yaml}
COMPRESS_CONFIG=${COMPRESS_CONFIG:-configs/compress-gpu.yaml}
COMPRESS_ARGS=${COMPRESS_ARGS:-}
CORPUS=${CORPUS:-data/corpus}
RUNS=${RUNS:-runs/device}
PY=${PY:-python3}
T0=$(date +%s)
el() { echo $(($(date +%s) - T0)); }
log() { echo "[$(el)s] $*"; }
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" "$RUNS"
if [ -z "${SKIP_SETUP:-}" ]; then # SKIP_SETUP=1: a dry run on a machine that has it all
  nvidia-smi -L
  rm -rf /tmp/site # a warm machine keeps an earlier call's install
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .devkit/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
  mkdir -p /tmp/ttsx && tar -xJf .devkit/tts.txz -C /tmp/ttsx && cp -an /tmp/ttsx/. / && ldconfig
fi
espeak-ng --stdout -v en-us "call jonathan" | wc -c
flite -t "call jonathan" -o /tmp/f.wav && wc -c </tmp/f.wav
log "tts ready"
JOBS=$(nproc)
# A warm machine keeps the corpus of an earlier call: synthesising it again would rewrite the
# manifests (new gzip headers), so the feature caches would be rebuilt too (98 s lost once).
if $PY -c "import json, sys; sys.exit(json.load(open('$CORPUS/corpus.json'))['config']['hours'] != $HOURS)" 2>/dev/null; then
  log "corpus of $HOURS h already here: kept"
else
  $PY -m edgeasr.cli corpus synth --out "$CORPUS" --hours "$HOURS" --seed 1 --jobs "$JOBS" \
    --no-test-audio >"$RUNS/synth.log" 2>&1 || { tail -20 "$RUNS/synth.log"; exit 1; }
  tr '\r' '\n' <"$RUNS/synth.log" | grep -v "%|" | tail -4
fi
log "corpus $HOURS h"
sha256sum "$CORPUS"/manifests/*_cuts.jsonl.gz
$PY - "$JOBS" "$CORPUS" <<'PY'
import sys
from pathlib import Path
from edgeasr.train.data import FeatureCache, cuts_path
c = Path(sys.argv[2])
for split in ("train", "dev"):
    FeatureCache.build(cuts_path(c, split), c / "feats", jobs=int(sys.argv[1]))
PY
log "features cached"
BUDGET=$((DEADLINE_S - $(el) - 50))
[ "$BUDGET" -lt 60 ] && BUDGET=60
# INIT / LR (optional): start the training runs from another package (a second call on the
# warm machine continuing the first call's best) at another peak learning rate.
budgeted() { # CONFIG OUT [SECONDS [INIT]] -> a copy with that time budget (default: BUDGET)
  $PY - "$1" "${3:-$BUDGET}" "$2" "${4:-${INIT:-}}" "${LR:-}" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["train"]["time_budget_s"] = float(sys.argv[2])
if sys.argv[4]:
    cfg["train"]["init_weights_from"] = sys.argv[4]
if sys.argv[5]:
    cfg["train"]["lr"] = float(sys.argv[5])
yaml.safe_dump(cfg, open(sys.argv[3], "w"))
PY
}
log "training for $BUDGET s"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 30 >"$OUT/gpu.csv" 2>&1 &
SMI=$!
NAMES=""
train_run() { # NAME CONFIG SECONDS [INIT]
  budgeted "$2" "/tmp/$1.yaml" "$3" "${4:-}"
  timeout -s INT $(($3 + 40)) $PY -m edgeasr.cli train --config "/tmp/$1.yaml" \
    --corpus "$CORPUS" --out "$RUNS/$1" >"$RUNS/$1.log" 2>&1
}
# A run of two stages, NAME:FIRST,SECOND, trains FIRST for STAGE1_PCT% of the budget, then
# SECOND from FIRST's best package (its init_weights_from) for the rest, as NAME-1 and NAME.
STAGE1_PCT=${STAGE1_PCT:-40}
for spec in $TRAINS; do
  name=${spec%%:*}
  cfgs=${spec#*:}
  if [ "${cfgs#*,}" = "$cfgs" ]; then
    NAMES="$NAMES $name"
    train_run "$name" "$cfgs" "$BUDGET" &
  else
    NAMES="$NAMES $name-1 $name"
    first=$((BUDGET * STAGE1_PCT / 100))
    (train_run "$name-1" "${cfgs%%,*}" "$first" &&
      train_run "$name" "${cfgs#*,}" $((BUDGET - first - 20)) "$RUNS/$name-1/best") &
  fi
done
if [ -n "$COMPRESS_ARGS" ]; then
  budgeted "$COMPRESS_CONFIG" /tmp/compress.yaml
  # shellcheck disable=SC2086  # COMPRESS_ARGS is a list of options
  timeout -s INT $((BUDGET + 40)) $PY -m edgeasr.cli compress --config /tmp/compress.yaml \
    --corpus "$CORPUS" --out "$RUNS/compress" $COMPRESS_ARGS >"$RUNS/compress.log" 2>&1 &
fi
wait $(jobs -p | grep -v "^$SMI$")
kill "$SMI" 2>/dev/null
log "training ended"
for run in $NAMES compress; do
  [ -f "$RUNS/$run.log" ] || continue
  echo "== $run"
  tr '\r' '\n' <"$RUNS/$run.log" | grep -E "dev WER|Error|error|best package" | tail -12
  # files come back only up to 16 MiB each (8 files in all): a package's tar is cut into 15 MiB
  # parts (cat NAME-best.tar.part* | tar -x)
  [ -d "$RUNS/$run/best" ] && tar -cf - -C "$RUNS/$run" best | split -b 15M - "$OUT/$run-best.tar.part"
  [ -f "$RUNS/$run/model.pack" ] && cp "$RUNS/$run/model.pack" "$OUT/$run.pack"
done
tar -czf "$OUT/logs.tgz" "$RUNS"/*.log "$RUNS"/*/metrics.jsonl "$RUNS"/*/config.yaml 2>/dev/null
ls -la "$OUT"
log done
