#!/usr/bin/env bash
# Sets up (see setup.sh) and runs every test: the crate's tests, then the notebooks
# executed headless and their exported HTML checked in offline Chromium.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
bash scripts/setup.sh --notebooks
source scripts/env.sh
cargo test --release
bash scripts/notebooks.sh --check
