#!/usr/bin/env bash
# Downloads, as wheels, what the GPU machine's image lacks for benchmarks/gpu_check.py: the
# service's dependencies (the test suite's conftest imports the app) and pytest. The image already
# has torch, transformers, triton, prometheus-client and httpx. The wheels go to
# benchmarks/.gpu-wheels (ignored by git; the device `run` tool carries that folder, 64 MiB max).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/.gpu-wheels"
mkdir -p "$dest"
python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --implementation cp \
    --dest "$dest" \
    fastapi "pydantic>=2.7" pydantic-settings "sqlalchemy>=2.0.30" alembic redis uvicorn \
    pytest pytest-timeout
du -sh "$dest"
