#!/usr/bin/env bash
# Rerun the README's evidence, one experiment after the other, each timed, into runs/ (or $1).
#
#   scripts/readme_evidence.sh [OUT] [STEP...]     # steps: compare strategies-images text blobs strategies-text
#                                                  #        rank px layers (default: all, in that order)
#
# Needs Debian's dataset-fashion-mnist (the full set) and wordnet-base (the word2vec corpus), or their paths in
# TRANSFERLAB_FASHION_MNIST_DIR / TRANSFERLAB_WORDNET_DIR. Several hours on 2 CPU cores: every cell trains to
# convergence. Each step writes OUT/<step>.log and OUT/<step>.time; a finished experiment is reused (--resume).
set -euo pipefail
OUT=${1:-runs}
shift || true
STEPS=${*:-compare strategies-images text blobs strategies-text rank px layers}
TL=${TRANSFERLAB:-transferlab}
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
cd "$OUT"

step() {  # step NAME COMMAND...: run once, time it, keep the log
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$name.log"
    /usr/bin/time -f "%e s wall, %M KB peak" -o "$name.time" -a "$@" >> "$name.log" 2>&1
}

run_compare() {
    step compare $TL compare "fashion-mnist:classes=5-9,set=full" --source efficientnet_lite0 \
        --arms logreg,scratch,frozen,finetune --seeds 3 --per-class 10,100,1000 --eval-per-class 200 \
        --image-size 64 --out readme-compare --resume
}

run_strategies_images() {
    step strategies-images $TL compare fashion-mnist:classes=5-9 --source efficientnet_lite0 --seeds 3 \
        --per-class 10,100 --image-size 64 \
        --arms logreg,scratch,frozen,finetune,finetune:decay=0.7,gradual,l2sp,bss --out era-images --resume
}

run_text() {
    [ -f wordnet-corpus.txt ] || step text-corpus $PY "$HERE/wordnet_corpus.py" \
        "${TRANSFERLAB_WORDNET_DIR:-/usr/share/wordnet}" wordnet-corpus.txt
    [ -d w2v-wordnet ] || step text-vectors $TL pretrain-vectors wordnet-corpus.txt --out w2v-wordnet
    step text $TL compare wordnet --out readme-text --source minilm --per-class 10,50,200 --seeds 3 \
        --arms "logreg,scratch:source=w2v-wordnet,frozen:source=w2v-wordnet,finetune:source=w2v-wordnet,frozen,finetune" \
        --resume
}

run_blobs() {
    [ -f blobs/problem1.csv ] || $PY "$HERE/make_blobs.py" blobs
    [ -f blobs/source/model.json ] || step blobs-source $TL pretrain blobs/problem1.csv --arch mlp_small \
        --out blobs/source --resume
    for target in problem2-same-centres problem2; do
        step "blobs-compare-$target" $TL compare "blobs/$target.csv" --source blobs/source \
            --arms logreg,scratch:source=mlp_small,frozen,finetune --seeds 10 --per-class 5,20,all \
            --out "blobs/compare-$target" --resume
        step "blobs-layers-$target" $TL layers --target-data "blobs/$target.csv" --source-data blobs/problem1.csv \
            --arch mlp_small --seeds 10 --per-class 10 --out "blobs/layers-$target" --resume
    done
}

run_strategies_text() {
    step strategies-text $TL compare wordnet --source minilm --seeds 3 --per-class 10,50 --eval-per-class 50 \
        --arms logreg,scratch:source=words,frozen,finetune,lora,gradual,finetune:reuse=3 --out era-text --resume
}

run_rank() {
    [ -f src-cnn-small-04/model.json ] || step rank-src-cnn $TL pretrain "fashion-mnist:classes=0-4" \
        --arch cnn_small --image-size 64 --out src-cnn-small-04 --resume
    [ -f src-resnet18-04/model.json ] || step rank-src-resnet $TL pretrain "fashion-mnist:classes=0-4" \
        --arch timm:resnet18 --image-size 64 --out src-resnet18-04 --resume
    step rank $TL rank "fashion-mnist:classes=5-9" --per-class 200 --image-size 64 \
        --sources efficientnet_lite0,src-cnn-small-04,src-resnet18-04,scratch:efficientnet_lite0 \
        --validate --seeds 2 --out readme-rank --resume
    step rank-text $TL rank wordnet --per-class 50 --sources minilm,w2v-wordnet,scratch:w2v-wordnet \
        --validate --seeds 2 --out readme-rank-text --resume
}

run_px() {  # what 64 px instead of 224 costs, frozen and fine-tuned (one seed; paired over the test images)
    for s in frozen finetune; do
        for px in 64 224; do
            step "px-$s-$px" $TL fit "fashion-mnist:classes=5-9,per_class=100" --source efficientnet_lite0 \
                --strategy $s --image-size $px --out "px-$s-$px" --resume
        done
        $PY "$HERE/paired_runs.py" "px-$s-224" "px-$s-64" | tee -a px.log
    done
}

run_layers() {
    step layers-a04-b59 $TL layers --source-data "fashion-mnist:classes=0-4" --target-data "fashion-mnist:classes=5-9" \
        --arch cnn_small --seeds 3 --image-size 32 --out layers-a04-b59 --resume
    step layers-a59-b04 $TL layers --source-data "fashion-mnist:classes=5-9" --target-data "fashion-mnist:classes=0-4" \
        --arch cnn_small --seeds 3 --image-size 32 --out layers-a59-b04 --resume
}

for s in $STEPS; do
    "run_${s//-/_}"
done
