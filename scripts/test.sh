#!/usr/bin/env bash
# Sets up (see setup.sh) and runs every test: the crate's tests, the offline chart
# checker against pages that must pass and pages that must fail, then every notebook
# executed headless on a short training run and its HTML checked in offline Chromium.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
bash scripts/setup.sh --notebooks
source scripts/env.sh
cargo test --release
bash scripts/check_html_selftest.sh
GROKLENS_EPOCHS="${GROKLENS_EPOCHS:-500}" bash scripts/notebooks.sh --check
