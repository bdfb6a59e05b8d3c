#!/usr/bin/env bash
# The main job: set up, then run the seed notebook end to end (25,000 epochs unless
# GROKLENS_EPOCHS says otherwise), writing notebooks/out/seed.ipynb and seed.html.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh" --notebooks
bash "$here/notebooks.sh" "$here/../notebooks/seed.ipynb"
echo "main: open notebooks/out/seed.html in a browser, or the notebook itself in JupyterLab (see README)"
