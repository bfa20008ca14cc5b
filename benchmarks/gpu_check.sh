#!/usr/bin/env bash
# The GPU measurements of the fast path, in one script for a bare CUDA machine (<= 8 minutes).
#
#   benchmarks/gpu_check.sh download   # here, with internet: the wheels a bare CUDA image lacks -> .whl/
#   benchmarks/gpu_check.sh run        # there, in the repo root: install from .whl/, measure, JSON -> $OUT
#   benchmarks/gpu_check.sh dry-run    # anywhere, on CPU: the same steps, tiny sizes (checks the script)
#
# The machine is expected to hold python3 3.12 with torch (CUDA), numpy, scipy, matplotlib,
# tensorboard, PyYAML, tqdm, imageio, cloudpickle, pytest and hypothesis, and no internet; what it
# lacks (gymnasium, pydantic and its parts, stable-baselines3) travels as wheels in .whl/ (git-ignored).
#
# ONLY="gpu_tests td3_updates" runs just those steps (names below); time_to_drive takes what time is left.
#
# `run` writes to $OUT (default ./gpu_check_out):
#   gpu_tests.txt            pytest of the CUDA tests (graph == eager losses, GPU replay storage, vector envs)
#   td3_updates_cuda.json    updates/s, batch 256: ours (CUDA graphs + GPU ring), ours eager, SB3, same GPU
#   env_collection.json      env steps/s: 1 env in process vs 16 async envs
#   time_to_drive_fast.json  configs/td3_fast.yaml: wall time to 80% eval success at scenario 0
#   gpu_check.log            stderr of every step
#   summary.json             exit code and seconds of every step
set -uo pipefail

MODE="${1:-run}"
cd "$(dirname "$0")/.."
WHEELS=(
  gymnasium==1.4.0 farama-notifications==0.0.6
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  stable-baselines3==2.9.2
)

if [ "$MODE" = download ]; then
  PY="${PYTHON:-python3}"
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
fi
if [ "$MODE" != run ] && [ "$MODE" != dry-run ]; then
  echo "usage: benchmarks/gpu_check.sh download|run|dry-run" >&2
  exit 2
fi

OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
START=$(date +%s)
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if [ "$MODE" = run ]; then
  DEVICE=cuda
  # wheels to /tmp/site; typing-extensions only where the image's is older than pydantic needs
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run 'benchmarks/gpu_check.sh download' first and carry .whl" >&2; exit 2; }
  if "$PY" -c "import sys; from importlib.metadata import version; from packaging.version import Version as V
sys.exit(0 if V(version('typing_extensions')) >= V('4.16') else 1)" 2>/dev/null; then
    WHL=$(ls .whl/*.whl | grep -v typing_extensions)
  else
    WHL=$(ls .whl/*.whl)
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $WHL >>"$LOG" 2>&1 \
    || { echo "wheel install failed (see $LOG)" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD/src"
  UPDATES="--rounds 3 --updates 300 --sb3-updates 100 --buffer 5000"
  ENVS="--envs 1 16 --seconds 10"
  DEADLINE=465  # seconds after START by which everything is done (8 minutes with a margin)
else
  DEVICE=cpu
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
  UPDATES="--rounds 1 --updates 2 --sb3-updates 1 --buffer 600 --threads 1"
  ENVS="--envs 1 2 --seconds 2"
  DEADLINE=240
fi

SUMMARY="{\"mode\": \"$MODE\", \"device\": \"$DEVICE\", \"steps\": {"
SEP=""
# step NAME TIMEOUT_S OUTFILE CMD...: run with a time limit, stdout to OUTFILE, record rc and seconds
step() {
  local name=$1 limit=$2 out=$3
  shift 3
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)" | tee -a "$LOG" >&2
  timeout "$limit" "$@" >"$out" 2>>"$LOG"
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  echo "== $name: rc=$rc in ${dt}s" | tee -a "$LOG" >&2
  SUMMARY="$SUMMARY$SEP\"$name\": {\"rc\": $rc, \"seconds\": $dt}"
  SEP=", "
}

step gpu_tests 120 "$OUT/gpu_tests.txt" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py tests/test_device_storage.py tests/test_vector_env.py
# (a script's own folder is on its sys.path: the benchmarks find benchmarks/machine.py from the repo root)
step td3_updates 120 "$OUT/td3_updates_cuda.json" \
  "$PY" benchmarks/td3_updates.py --device $DEVICE --skip-separate $UPDATES
step env_collection 50 "$OUT/env_collection.json" \
  "$PY" benchmarks/env_collection.py --mode async $ENVS

LEFT=$(( DEADLINE - ($(date +%s) - START) ))
BUDGET=$(( LEFT - 30 ))  # room for start-up and the evaluation in flight when the budget runs out
if [ "$MODE" = run ]; then
  TTD=(--config configs/td3_fast.yaml --eval-every 4000 --device cuda --budget-s "$BUDGET")
else
  TTD=(--config configs/td3_fast.yaml --eval-every 200 --episodes 1 --device cpu --budget-s "$BUDGET"
       --set training.num_envs=2 --set training.max_timesteps=400 --set algorithm.start_timesteps=200
       --set algorithm.batch_size=32 --set training.buffer_size=2000)
fi
if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" time_to_drive "* ]]; then
  :
elif [ "$BUDGET" -gt 30 ]; then
  step time_to_drive $(( LEFT - 5 )) "$OUT/time_to_drive_fast.json" \
    "$PY" benchmarks/time_to_drive.py "${TTD[@]}"
else
  echo "== time_to_drive skipped: only ${LEFT}s left" | tee -a "$LOG" >&2
fi

SUMMARY="$SUMMARY}, \"total_seconds\": $(( $(date +%s) - START ))}"
echo "$SUMMARY" >"$OUT/summary.json"
echo "$SUMMARY"
