#!/usr/bin/env bash
# The GPU check (issue #13): on a CUDA machine, in under 8 minutes, prints
#   1. SEAL's cost per epoch next to plain SFT (Algorithm 2 target <= 2.0x), both at the package's default precision
#      (finetune.mixed_precision=auto: bf16 autocast on GPUs from Ampere on),
#   2. DualSelect's per-example gradients against the one-backward-per-row loop (target >= 3x faster),
#   3. one SmolLM2 quickstart cell's stage times (benchmarks/bench_cell.py: float32 and bf16 fine-tuning with
#      packed rows, bf16 with and without the frozen base held as bf16 copies, HF / CTranslate2 / the torch loop
#      in float32 and bfloat16; none of these has run on CUDA yet).
# Run from the repository root with the project's venv:  bash benchmarks/gpu.sh [OUT_DIR]
# Each step has its own time limit (with the conversion 60 + 120 + 90 + 180 = 450 s, under 8 minutes) so a slow
# step cannot eat the others' budget; figures go to OUT_DIR.
# Status: written for issue #13 but NOT RUN YET (no GPU machine was lent to that work); see docs/results.md.
set -uo pipefail
OUT=${1:-runs/gpu-check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-$PWD/src} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
$PY - <<'PYEOF' || { echo "gpu.sh: no CUDA device visible to torch" >&2; exit 2; }
import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PYEOF
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv 2>/dev/null | tee "$OUT/nvidia-smi.txt"
# The SmolLM2 checkpoint is dequantised once from the installed GGUF (cached under $SAFESELECT_CACHE).
timeout 60 $PY -c "from safeselect.models import smollm2; smollm2.convert()" || echo "gpu.sh: SmolLM2 conversion failed" >&2
rc=0
step() {  # step NAME LIMIT_S CMD...
    local name=$1 limit=$2; shift 2
    echo; echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>"$OUT/$name.err" | tee "$OUT/$name.md"
    local s=${PIPESTATUS[0]}
    echo "-- $name: exit $s after $((SECONDS - t0)) s (stderr in $OUT/$name.err)"
    [ "$s" -eq 0 ] || rc=1
}
step seal 120 $PY benchmarks/bench_seal.py --device cuda --repeats 2 --threads 4
step dualselect 90 $PY benchmarks/bench_dualselect.py --device cuda --repeats 5 --refresh-repeats 2
step cell 180 $PY benchmarks/bench_cell.py --device cuda --base --n-eval 40
echo; echo "gpu.sh: done in $SECONDS s; figures in $OUT/*.md"
exit $rc
