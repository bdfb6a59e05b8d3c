#!/usr/bin/env bash
# Installs what groklens needs, reusing whatever is already there at the right version:
#   - a Python venv with torch 2.11.0 from PyPI (libtorch for tch 0.24.0),
#   - with --notebooks: Jupyter's headless runner, evcxr_jupyter 0.22.0 and a `groklens`
#     kernelspec that carries the libtorch environment, and Chromium for the offline check,
#   - strace, which the resume tests kill runs with,
#   - with --reference: TransformerLens 2.18.0, the peer for golden values and benchmarks.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

want_notebooks=0; want_reference=0
for arg in "$@"; do
  case "$arg" in
    --notebooks) want_notebooks=1 ;;
    --reference) want_reference=1 ;;
    *) echo "setup.sh: unknown option $arg (expected --notebooks or --reference)" >&2; exit 2 ;;
  esac
done

command -v cargo >/dev/null || { echo "setup.sh: cargo not found; install Rust with rustup first" >&2; exit 1; }

if ! "$GROKLENS_VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "setup: creating $GROKLENS_VENV with torch $TORCH_VERSION (about 5 GB, a few minutes)"
  python3 -m venv "$GROKLENS_VENV"
  "$GROKLENS_VENV/bin/pip" install -q --upgrade pip
  "$GROKLENS_VENV/bin/pip" install -q "torch==$TORCH_VERSION" "numpy==1.26.4"
fi
# Again, now that the venv exists: the torch library folder is known only from here on.
source "$here/env.sh"
if [ -z "$GROKLENS_TORCH_LIB" ]; then
  echo "setup.sh: no libtorch_cpu.so under $GROKLENS_VENV/lib/python3*/site-packages/torch/lib" >&2; exit 1
fi

if [ "$want_reference" = 1 ]; then
  "$GROKLENS_VENV/bin/pip" install -q -r "$here/../tests/golden/requirements.txt" "torch==$TORCH_VERSION"
fi

if [ "$want_notebooks" = 1 ]; then
  "$GROKLENS_VENV/bin/pip" install -q -r "$here/requirements-notebooks.txt"
  if ! cargo install --list | grep -q "^evcxr_jupyter v0.22.0:"; then
    echo "setup: installing evcxr_jupyter 0.22.0 (about 8 minutes)"
    cargo install evcxr_jupyter --locked --version 0.22.0
  fi
  # Each notebook cell is a library linked to Rust's own libstd-*.so (evcxr builds with
  # -Cprefer-dynamic); its relative rpath misses by a folder when evcxr's build folder and
  # the toolchain share a parent (both under $HOME, say), so the kernel names the folder.
  rust_lib="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/lib"
  if ! compgen -G "$rust_lib/libstd-*.so" >/dev/null; then
    echo "setup.sh: no libstd-*.so in $rust_lib (rustc --print sysroot)" >&2; exit 1
  fi
  kernel_dir="$GROKLENS_VENV/share/jupyter/kernels/groklens"
  mkdir -p "$kernel_dir"
  cp "$here/kernel.sh" "$kernel_dir/kernel.sh"
  cat > "$kernel_dir/kernel.json" <<JSON
{
  "argv": ["bash", "$kernel_dir/kernel.sh", "--control_file", "{connection_file}"],
  "display_name": "Rust (groklens)",
  "language": "rust",
  "interrupt_mode": "message",
  "env": {
    "GROKLENS_HOME": "$GROKLENS_HOME",
    "LIBTORCH_USE_PYTORCH": "1",
    "LD_LIBRARY_PATH": "$GROKLENS_TORCH_LIB:$rust_lib",
    "PATH": "$PATH"
  }
}
JSON
fi

# Debian packages the tests use: Chromium for the offline chart check, strace to kill
# training runs at exact points in the resume tests.
missing=()
command -v strace >/dev/null || missing+=(strace)
[ "$want_notebooks" = 1 ] && ! command -v chromium >/dev/null && missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (Debian's packages)"
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
