#!/usr/bin/env bash
# The GPU throughput run of issue 20 (one device call): stage table + scans + cold CLI scan over LFW JPEG files.
#   bash benchmarks/batch_gpu_run.sh PACK OUT [COPIES] [PYSITE] [WORKERS (default: CPUs - 2)]
# PACK holds photos.tar (folder r0/: the first 2,600 LFW photos in path order, JPEG files) and, on the device,
# site.tar.xz (sqlalchemy, alembic, mako, faiss-cpu, facenet-pytorch installed for cp312). The photo folder is
# copied COPIES times (real copies: the walk reads each path; a hard link would count as one file).
set -euo pipefail
PACK=$1; OUT=$2; COPIES=${3:-8}; PYSITE=${4:-/tmp/site}; WORKERS=${5:-}
if [ -f "$PACK/site.tar.xz" ] && [ ! -d "$PYSITE/faiss" ]; then mkdir -p "$PYSITE" && tar -C "$PYSITE" -xJf "$PACK/site.tar.xz"; fi
export PYTHONPATH=$PYSITE:$PWD FACEREC_HOME=/tmp/fh_t20 PYTHONUNBUFFERED=1
PHOTOS=/tmp/photos_t20; rm -rf $PHOTOS /tmp/fh_t20 /tmp/t20cli.db*; mkdir -p $PHOTOS
tar -C $PHOTOS -xf "$PACK/photos.tar"
for i in $(seq 1 $((COPIES - 1))); do cp -r $PHOTOS/r0 $PHOTOS/r$i; done
W=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
{ uname -a; nproc; uptime; python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))'; } > "$OUT/machine.txt" 2>&1
command -v nvidia-smi >/dev/null && { nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 & }
# STAGE_ARGS (environment): more arguments for the stage script, e.g. "--scans-only --analyse-workers 12"
python3 benchmarks/batch_stage_times.py $PHOTOS --workers $W --chunk 1024 --task 32 --sweep 256,2048 \
    ${STAGE_ARGS:-} --out "$OUT/stages.json" 2>&1 | tee "$OUT/stages.log"
[ -n "${SKIP_CLI:-}" ] && exit 0
t0=$(date +%s.%N)
python3 cli.py --db /tmp/t20cli.db batch scan $PHOTOS --job cli --workers $W --chunk 1024 --json \
    > "$OUT/cli_scan.json" 2> "$OUT/cli_scan.err" || tail -5 "$OUT/cli_scan.err"
t1=$(date +%s.%N)
echo "cli scan wall (process start and model load included, $(find $PHOTOS -name '*.jpg' | wc -l) photos): $(python3 -c "print(round($t1 - $t0, 2))") s" | tee -a "$OUT/stages.log"
cat "$OUT/cli_scan.json"
