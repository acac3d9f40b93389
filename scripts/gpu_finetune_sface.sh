#!/usr/bin/env bash
# Issue 19: fine-tune SFace 2021dec (chosen by model id) with triplet + ArcFace and pose augmentation, on one
# H200 through the device tool, two recipes in one call; the one with the better validation EER is the run's
# result (the pose test folds 6-10 and LFW are not seen here). Results: benchmarks/results/issue19_finetune/.
#
# Here (CPU), once: the training crop cache, with the test identities (pose split folds 6-10) left out:
#   python -m facerec.train cache --source ../shared/data/faces/celeba_wild --model sface_2021dec \
#       --out .cache/crops/sface_2021dec_train --holdout-pairs benchmarks/pose_split/pairs_frontal_profile.txt \
#       --holdout-folds 6-10
# A smoke run on CPU: SMOKE=1 bash scripts/gpu_finetune_sface.sh
# On the device: this checkout's facerec/, scripts/, the pairs file and the cache copied into an ignored folder
# of the session's checkout (pack/s2-19a), then run(command="cd pack/s2-19a && bash scripts/gpu_finetune_sface.sh",
# carry=["pack/s2-19a"]); SFace's weights come from that checkout's facerec/weights (checked by sha256).
set -uo pipefail
export PYTHONUNBUFFERED=1
CACHE=${CACHE:-.cache/crops/sface_2021dec_train}
PAIRS=benchmarks/pose_split/pairs_frontal_profile.txt
OUT=${OUT:-out/gpu_finetune}
RUNS=${RUNS:-/tmp/runs}
mkdir -p "$OUT" "$RUNS"
if [ ! -f facerec/weights/sface_2021dec/model.json ] && [ -f ../../facerec/weights/sface_2021dec/model.json ]; then
    cp -r ../../facerec/weights/sface_2021dec facerec/weights/
fi
python3 - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import hashlib, json, platform, torch, onnx
card = json.load(open("facerec/weights/sface_2021dec/model.json"))
digest = hashlib.sha256(open("facerec/weights/sface_2021dec/" + card["weights_file"], "rb").read()).hexdigest()
assert digest == card["weights_sha256"], "sface weights differ from the card"
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                  "cuda": torch.cuda.is_available(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "sface_sha256_ok": True}))
EOF
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
COMMON=(--cache "$CACHE" --base-model sface_2021dec --init pretrained --loss both --triplet-weight 1.0
        --arcface-weight 0.1 --arcface-m 0.5 --margin 0.2 --mining batch_hard --head-warmup-epochs 3 --lr 1e-3
        --relative-lr --val-fraction 0.15 --early-stop eer --patience 10 --epochs 40 --p 32 --k 4
        --holdout-pairs "$PAIRS" --holdout-folds 6-10 --export-dtype int8 --seed 0 --quiet
        --augment-option flip=0.5 --augment-option yaw=0.5 --augment-option yaw_deg=35
        --augment-option crop=0.3 --augment-option crop_min=0.85)
if [ "${SMOKE:-0}" = 1 ]; then
    COMMON+=(--device cpu --threads 1 --epochs 2 --head-warmup-epochs 1 --batches-per-epoch 2 --p 4 --k 2
             --limit-identities 40 --val-impostors 2000)
fi
fit() {
    name=$1; shift
    echo "== $name: $*" | tee -a "$OUT/train.log"
    start=$(date +%s)
    python3 -m facerec.train fit "${COMMON[@]}" --out "$RUNS/$name" --export-id "sface_2021dec_ft_$name" "$@" \
        >> "$OUT/train.log" 2>&1
    echo "$name rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$OUT/train.log"
    tar -C "$RUNS/$name" -cf "$OUT/$name.tar" metrics.jsonl config.json split.json result.json export \
        2>>"$OUT/train.log"
}
# a: the first third of the network (conv_1 .. conv_5) frozen, backbone LR 0.05 x the head's (relative)
fit a --freeze-until conv_5 --pretrained-lr-mult 0.05 --time-limit-s "${TIME_A:-120}"
# b: the whole backbone trained, backbone LR 0.2 x the head's (relative)
fit b --freeze-until none --pretrained-lr-mult 0.2 --time-limit-s "${TIME_B:-120}"
ls -la "$OUT"
