# Sourced by the other scripts: where libtorch and the Python tools live, and how cargo finds them.
# GROKLENS_HOME holds the Python venv (torch 2.11.0 from PyPI); override it to reuse another one.
GROKLENS_HOME="${GROKLENS_HOME:-$HOME/.cache/groklens}"
GROKLENS_VENV="${GROKLENS_VENV:-$GROKLENS_HOME/venv}"
TORCH_VERSION="2.11.0"
export LIBTORCH_USE_PYTORCH=1
export PATH="$GROKLENS_VENV/bin:$HOME/.cargo/bin:$PATH"
GROKLENS_TORCH_LIB="$(echo "$GROKLENS_VENV"/lib/python3*/site-packages/torch/lib)"
export LD_LIBRARY_PATH="$GROKLENS_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
