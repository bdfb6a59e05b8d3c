#!/usr/bin/env bash
# Executes notebooks headless with the groklens kernel and exports each to HTML, into
# notebooks/out/. With --check, fails unless evcxr built them with Cargo.lock's versions
# and every chart cell displayed a chart, then opens every page in offline Chromium and
# fails unless every chart drew and no script error was logged.
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

# Each cell is a library that evcxr loads with dlopen: without libtorch and Rust's libstd on
# the kernel's LD_LIBRARY_PATH, the first cell that needs one fails with a bare "dlopen failed".
kernel_libs="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["env"]["LD_LIBRARY_PATH"])' \
  "$JUPYTER_PATH/kernels/groklens/kernel.json")"
for lib in "libtorch_cpu.so" "libstd-*.so"; do
  found=0
  IFS=: read -ra dirs <<<"$kernel_libs"
  for dir in "${dirs[@]}"; do compgen -G "$dir/$lib" >/dev/null && found=1; done
  if [ "$found" = 0 ]; then
    echo "notebooks.sh: no $lib on the groklens kernel's LD_LIBRARY_PATH ($kernel_libs); run scripts/setup.sh --notebooks" >&2
    exit 1
  fi
done
mkdir -p notebooks/out
for book in "${books[@]}"; do
  name="$(basename "$book" .ipynb)"
  start=$SECONDS
  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=groklens \
    --ExecutePreprocessor.timeout=14400 --output-dir notebooks/out "$book"
  # Point the page template's require.js and MathJax at empty scripts: the page loads nothing.
  jupyter nbconvert --to html --HTMLExporter.require_js_url=data:text/javascript, \
    --HTMLExporter.mathjax_url=data:text/javascript, --output-dir notebooks/out "notebooks/out/$name.ipynb"
  echo "notebooks: $name executed and exported in $((SECONDS - start)) s"
  if [ "$check" = 1 ]; then
    python scripts/check_lock.py "$EVCXR_TMPDIR/build/Cargo.lock" Cargo.lock
    python scripts/check_notebook.py "notebooks/out/$name.ipynb"
    python scripts/check_html.py "notebooks/out/$name.html"
  fi
done
