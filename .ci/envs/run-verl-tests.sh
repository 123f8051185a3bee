#!/usr/bin/env bash
# Run envtests/verl in the veRL venv (built by verl.sh if needed) against the sharpwatch
# distribution built from this checkout and installed into a scratch directory: the test sees
# the distribution's real entry points, not the checkout. Fails, never skips.
# SHARPWATCH_SERVICE_PYTHON: a python of the project's environment, to run the real service
# (default: the python on PATH).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="$("$root/.ci/envs/verl.sh")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --target "$scratch/site" "$root" 2>&1 | grep -v 'is ignored' >&2 || true
test -d "$scratch/site/trainer_hooks" || { echo "installing sharpwatch into $scratch failed" >&2; exit 1; }
export SHARPWATCH_SERVICE_PYTHON="${SHARPWATCH_SERVICE_PYTHON:-$(command -v python)}"
cd "$root"
PYTHONPATH="$scratch/site" "$py" -P -m pytest -q -p no:cacheprovider envtests/verl "$@"
