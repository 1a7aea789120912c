#!/usr/bin/env bash
# What a run writes to a log file (stdout and stderr redirected, not a terminal): bytes, lines and carriage returns of
# a 3-epoch image fit, an 18-cell tabular compare and a tabular layers sweep. About a minute on 2 cores.
#
#   benchmarks/log_size.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
TL=${TRANSFERLAB:-$PWD/.venv/bin/transferlab}
PY=${PYTHON:-$PWD/.venv/bin/python}
W=${1:-$(mktemp -d -t transferlab-logs-XXXXXX)}
mkdir -p "$W"
[ -f "$W/blobs/problem1.csv" ] || "$PY" scripts/make_blobs.py "$W/blobs" > /dev/null
[ -f "$W/blobs/source/model.json" ] || "$TL" -q pretrain "$W/blobs/problem1.csv" --arch mlp_small --out "$W/blobs/source" > /dev/null
cd "$W"
rm -rf fit cmp lay
"$TL" fit "fashion-mnist:classes=5-9,per_class=20" --source efficientnet_lite0 --epochs 3 --image-size 32 --out fit > fit.log 2>&1
"$TL" compare blobs/problem2.csv --source blobs/source --arms logreg,scratch:source=mlp_small,frozen,finetune --seeds 3 \
    --per-class 5,20 --out cmp > cmp.log 2>&1
"$TL" layers --target-data blobs/problem2.csv --source-data blobs/problem1.csv --arch mlp_small --seeds 2 --per-class 10 \
    --out lay > lay.log 2>&1
for f in fit cmp lay; do
    echo "$f: $(wc -c < $f.log) bytes, $(wc -l < $f.log) lines, $(tr -cd '\r' < $f.log | wc -c) carriage returns ($W/$f.log)"
done
