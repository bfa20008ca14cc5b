#!/usr/bin/env bash
# benchmarks/learning.py on one GPU machine: several training seeds in parallel processes sharing the GPU,
# each judged on 20 held-out episodes beside the classical controller, JSON out, in <= 8 minutes.
#
#   benchmarks/gpu_check.sh download        # here, with internet: wheels a bare CUDA image lacks -> .whl/
#   bash benchmarks/learning_gpu.sh         # there: install from .whl/ (if present), run, write $OUT
#   SEEDS="0 1 2" SCENARIOS="0 1 2" STEPS=200000 bash benchmarks/learning_gpu.sh   # the longer runs
#   # variants side by side (all at once, SEEDS each): name=override,override;name=...
#   VARIANTS="caps=algorithm.action_smoothness=0.3;lane=env.lane_invasion_ends_episode=true" \
#     bash benchmarks/learning_gpu.sh
#
# Writes $OUT/learning.json (benchmarks/learning.py's JSON), $OUT/learning.png and $OUT/learning.log;
# with VARIANTS, $OUT/<name>.json and $OUT/<name>.png per variant (partial JSON if the time limit hits).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/learning_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import gymnasium, pydantic" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $(ls .whl/*.whl | grep -v typing_extensions) >>"$OUT/learning.log" 2>&1 || { echo "wheel install failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
SEEDS="${SEEDS:-0 1 2 3 4}"
SCENARIOS="${SCENARIOS:-0}"
JOBS="${JOBS:-$(echo $SEEDS | wc -w)}"
STEPS_ARG=()
[ -n "${STEPS:-}" ] && STEPS_ARG=(--steps "$STEPS")

learning() {  # learning NAME [learning.py args...]
  local name="$1"; shift
  timeout "${LIMIT_S:-450}" "$PY" benchmarks/learning.py --seeds $SEEDS --scenarios $SCENARIOS "${STEPS_ARG[@]}" \
    --device "${DEVICE:-cuda}" --jobs "$JOBS" --threads 1 --episodes "${EPISODES:-20}" --work-dir "/tmp/learning/$name" \
    --out "$OUT/$name.json" "$@" >/dev/null 2>>"$OUT/learning.log"
  local rc=$?
  echo "learning.py $name rc=$rc" | tee -a "$OUT/learning.log"
  return $rc
}

if [ -z "${VARIANTS:-}" ]; then
  learning learning "$@"
  exit $?
fi
pids=()
IFS=';' read -ra specs <<<"$VARIANTS"
for spec in "${specs[@]}"; do
  name="${spec%%=*}"; overrides="${spec#*=}"
  sets=()
  [ "$overrides" != "$spec" ] && IFS=',' read -ra list <<<"$overrides" && for o in "${list[@]}"; do sets+=(--set "$o"); done
  learning "$name" "${sets[@]}" "$@" &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
