#!/usr/bin/env bash
# Executes notebooks headless with the groklens kernel and exports each to HTML, into
# notebooks/out/. With --check, opens every page in offline Chromium and fails unless
# every chart drew and no script error was logged.
#   bash scripts/notebooks.sh [--check] [notebooks/seed.ipynb ...]   (default: all)
# GROKLENS_EPOCHS shortens the notebooks' training runs (the default is the seed's 25,000).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source scripts/env.sh
export JUPYTER_PATH="$GROKLENS_VENV/share/jupyter"

check=0; books=()
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    *.ipynb) books+=("$arg") ;;
    *) echo "notebooks.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ ${#books[@]} -gt 0 ] || books=(notebooks/*.ipynb)

mkdir -p notebooks/out
for book in "${books[@]}"; do
  name="$(basename "$book" .ipynb)"
  start=$SECONDS
  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=groklens \
    --ExecutePreprocessor.timeout=3600 --output-dir notebooks/out "$book"
  jupyter nbconvert --to html --output-dir notebooks/out "notebooks/out/$name.ipynb"
  echo "notebooks: $name executed and exported in $((SECONDS - start)) s"
  if [ "$check" = 1 ]; then
    python scripts/check_html.py "notebooks/out/$name.html" --allow-blocked
  fi
done
