#!/usr/bin/env bash
# Creates benchmarks/.peers-venv with the peers the side-by-side benchmark compares against
# (MLflow tracking server, rlwatch), pinned, in their own virtual environment so their
# dependencies never touch the project's environment. Idempotent: does nothing when the venv
# already holds the pinned versions. Run by benchmarks/run_all.py when needed.
set -euo pipefail
MLFLOW_VERSION="${MLFLOW_VERSION:-3.17.2}"
RLWATCH_VERSION="${RLWATCH_VERSION:-0.5.1}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.peers-venv"
python="${PYTHON:-python3}"
stamp="$venv/.pinned"
want="mlflow==$MLFLOW_VERSION rlwatch==$RLWATCH_VERSION"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "mlflow==$MLFLOW_VERSION" "rlwatch==$RLWATCH_VERSION"
"$venv/bin/python" -c "import mlflow, rlwatch; print('peers:', 'mlflow', mlflow.__version__, 'rlwatch', rlwatch.__version__ if hasattr(rlwatch, '__version__') else '$RLWATCH_VERSION')"
echo "$want" > "$stamp"
