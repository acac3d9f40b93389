#!/usr/bin/env bash
# The training runs reported in MODEL_CARD.md, as run on the lent H100 through the device tool:
#   run(command="bash scripts/gpu_train.sh", carry=[".cache/crops/dlib_resnet29"], timeout_s=600)
# The crop cache is built here first (CPU): python -m facerec.train cache --source ../shared/data/faces/celeba_wild
#   --model dlib_resnet29 --out .cache/crops/dlib_resnet29
# Each run's export folder and metrics come back as one tar in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
CACHE=.cache/crops/dlib_resnet29
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fit() {
    name=$1; shift
    echo "== $name: $*" | tee -a "$OUT/train.log"
    start=$(date +%s)
    python3 -m facerec.train fit --cache "$CACHE" --out "/tmp/runs/$name" --quiet "$@" >> "$OUT/train.log" 2>&1
    echo "$name rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$OUT/train.log"
    tar -C "/tmp/runs/$name" -cf "$OUT/$name.tar" metrics.jsonl config.json split.json export 2>>"$OUT/train.log"
}
# fine-tune dlib ResNet-29 with triplet + ArcFace (stem..res64 frozen, ArcFace head warmed up first)
fit ft_both --loss both --triplet-weight 1.0 --arcface-weight 0.1 --freeze-until res64 --head-warmup-epochs 2 \
    --epochs 40 --patience 8 --time-limit-s 120 --export-id dlib_resnet29_ft_both
# fine-tune with triplet loss alone (batch-hard), the best recipe of the sweep
fit ft_triplet --loss triplet --freeze-until res64 --epochs 40 --patience 8 --time-limit-s 90 \
    --export-id dlib_resnet29_ft_triplet
# the same network from scratch (triplet + ArcFace), to prove that path
fit scratch --init scratch --loss both --lr 2e-3 --epochs 400 --patience 0 --time-limit-s 250 \
    --export-id dlib_scratch_celeba
ls -la "$OUT"
