#!/usr/bin/env bash
# Executes notebooks headless with the groklens kernel and exports each to HTML, into
# notebooks/out/. With --check, fails unless every chart cell displayed a chart, then
# opens every page in offline Chromium and fails unless every chart drew and no script
# error was logged.
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

# evcxr keeps compiled crates here between runs (a folder under ~/.cache made its kernel fail
# to load its first cell here, "dlopen failed"; one under /tmp works).
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-/tmp/groklens-evcxr}"
mkdir -p notebooks/out "$EVCXR_TMPDIR"
for book in "${books[@]}"; do
  name="$(basename "$book" .ipynb)"
  start=$SECONDS
  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=groklens \
    --ExecutePreprocessor.timeout=3600 --output-dir notebooks/out "$book"
  # Point the page template's require.js and MathJax at empty scripts: the page loads nothing.
  jupyter nbconvert --to html --HTMLExporter.require_js_url=data:text/javascript, \
    --HTMLExporter.mathjax_url=data:text/javascript, --output-dir notebooks/out "notebooks/out/$name.ipynb"
  echo "notebooks: $name executed and exported in $((SECONDS - start)) s"
  if [ "$check" = 1 ]; then
    python scripts/check_notebook.py "notebooks/out/$name.ipynb"
    python scripts/check_html.py "notebooks/out/$name.html"
  fi
done
