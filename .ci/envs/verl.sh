#!/usr/bin/env bash
# Build (once) the veRL test environment and print its python's path on stdout.
#
# veRL pins transformers < 5.11, Ray and tensordict 0.8-0.10, which clash with the project's
# own environment, so its tests run in a venv of their own, cached outside the checkout under
# ${SHARPWATCH_ENV_CACHE:-$HOME/.cache/sharpwatch/envs}/verl-<hash of the pins, verl.txt>.
# Idempotent: a finished venv (marked by .complete) is reused as it is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${SHARPWATCH_ENV_CACHE:-$HOME/.cache/sharpwatch/envs}"
hash="$(sha256sum <"$here/verl.txt" | cut -c1-12)"
venv="$cache/verl-$hash"
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  mkdir -p "$cache"
  python3.11 -m venv "$venv" >&2
  # pip's notes about this machine's local indexes are noise; everything else goes to stderr.
  quiet() { "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; } >&2; }
  pip=(quiet "$venv/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip
  # CPU torch first (the +cpu wheel outranks the CUDA build of the same version).
  "${pip[@]}" "torch==2.13.0"
  grep -v '^verl==' "$here/verl.txt" | grep -v '^#' | grep -v '^$' >"$venv/deps.txt"
  "${pip[@]}" -r "$venv/deps.txt"
  "${pip[@]}" --no-deps "$(grep '^verl==' "$here/verl.txt")"
  "$venv/bin/python" - >&2 <<'PY'
import importlib.metadata as md
import torch
assert torch.version.cuda is None, f"a CUDA torch came in: {torch.__version__}"
cuda = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia")]
assert not cuda, f"CUDA packages came in: {cuda}"
import verl.trainer.ppo.core_algos  # noqa: F401  (the import graphs we rely on are complete)
import verl.trainer.ppo.v1.utils  # noqa: F401
print("verl", md.version("verl"), "torch", torch.__version__)
PY
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
