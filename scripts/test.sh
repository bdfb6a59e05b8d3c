#!/usr/bin/env bash
# Sets up (see setup.sh) and runs every test: the crate's tests, a sweep on Slurm when a
# cluster answers (check_slurm_sweep.sh; .ci/run starts a one-node one), the offline chart
# checker against pages that must pass and pages that must fail, the lock check against
# a lock that must fail, then every notebook executed headless on a short training run,
# its crate versions checked against Cargo.lock and its HTML in offline Chromium.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
bash scripts/setup.sh --notebooks
source scripts/env.sh
cargo test --release
bash scripts/check_slurm_sweep.sh
bash scripts/check_html_selftest.sh
python scripts/check_lock.py --selftest Cargo.lock
GROKLENS_EPOCHS="${GROKLENS_EPOCHS:-500}" bash scripts/notebooks.sh --check
