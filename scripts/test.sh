#!/usr/bin/env bash
# Sets up (see setup.sh) and runs every test: the crate's tests, a sweep on Slurm when a
# cluster answers (check_slurm_sweep.sh; .ci/run starts a one-node one), the offline chart
# checker against pages that must pass and pages that must fail, the lock check against
# a lock that must fail, then every notebook executed headless on a short training run,
# its crate versions checked against Cargo.lock and its HTML in offline Chromium, and last
# the key-frequency chooser clicked in Chromium, on the seed notebook's page and on
# report.html of the run it trained, its drawn values compared with the crate's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
bash scripts/setup.sh --notebooks
source scripts/env.sh
cargo test --release
bash scripts/check_slurm_sweep.sh
bash scripts/check_html_selftest.sh
python scripts/check_lock.py --selftest Cargo.lock
epochs="${GROKLENS_EPOCHS:-500}"
GROKLENS_EPOCHS="$epochs" bash scripts/notebooks.sh --check
cargo build --release
run="$(python - "$epochs" <<'PY'
import glob, json, sys
runs = [path[: -len("/config.json")] for path in glob.glob("runs/*/config.json")
        if (c := json.load(open(path)))["task"]["g"]["power"] == 4 and c["train"]["num_epochs"] == int(sys.argv[1])]
print(runs[0] if len(runs) == 1 else sys.exit(f"expected one seed-task run of {sys.argv[1]} epochs in runs/, found {runs}"))
PY
)"
analysis="$(mktemp -d)"
trap 'rm -rf "$analysis"' EXIT
target/release/groklens analyze "$run" --out "$analysis/out"
python scripts/check_chooser.py "$analysis/out/report.html" --run "$run" --groklens target/release/groklens
python scripts/check_chooser.py notebooks/out/seed.html --run "$run" --groklens target/release/groklens
