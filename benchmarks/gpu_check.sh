#!/usr/bin/env bash
# On the GPU machine, from the repository root: install the carried wheels (no index: that machine
# reaches nothing) into /tmp/site, beside the image's own torch and numpy, then run the GPU check;
# results in ${1:-.}/gpu_check.json.
#   here:   bash benchmarks/gpu_wheels.sh
#   device: run(command='bash benchmarks/gpu_check.sh "$OUT"', carry=["benchmarks/.gpu-wheels"])
set -euo pipefail
out="${1:-.}"
if [ -d benchmarks/.gpu-wheels ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site benchmarks/.gpu-wheels/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$out/gpu_check.json"
