#!/usr/bin/env bash
# The "Rust (groklens)" Jupyter kernel (setup.sh copies it beside its kernel.json): evcxr,
# building in a persistent folder with the project's own Cargo.lock, so that notebooks are
# built with exactly the crate versions that the tests were built with. Jupyter starts a
# kernel in the notebook's folder; the project is the nearest folder above it with a Cargo.lock.
set -euo pipefail
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-$GROKLENS_HOME/evcxr}"
mkdir -p "$EVCXR_TMPDIR"
project="$PWD"
while [ "$project" != / ] && [ ! -f "$project/Cargo.lock" ]; do project="$(dirname "$project")"; done
if [ -f "$project/Cargo.lock" ]; then
  # evcxr resolves its build folder's own Cargo.lock; starting from ours, cargo keeps our versions.
  cp "$project/Cargo.lock" "$EVCXR_TMPDIR/Cargo.lock"
fi
exec evcxr_jupyter "$@"
