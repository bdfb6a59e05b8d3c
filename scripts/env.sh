# Sourced by the other scripts: where libtorch and the Python tools live, and how cargo finds them.
# GROKLENS_HOME holds the Python venv (torch 2.11.0 from PyPI); override it to reuse another one.
# Safe to source before the venv exists (setup.sh sources it again once it does):
# GROKLENS_TORCH_LIB is then empty, never an unexpanded pattern.
GROKLENS_HOME="${GROKLENS_HOME:-$HOME/.cache/groklens}"
GROKLENS_VENV="${GROKLENS_VENV:-$GROKLENS_HOME/venv}"
TORCH_VERSION="2.11.0"
export LIBTORCH_USE_PYTORCH=1
if [[ ":$PATH:" != *":$GROKLENS_VENV/bin:"* ]]; then
  export PATH="$GROKLENS_VENV/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
GROKLENS_TORCH_LIB=""
for dir in "$GROKLENS_VENV"/lib/python3*/site-packages/torch/lib; do
  if [ -f "$dir/libtorch_cpu.so" ]; then GROKLENS_TORCH_LIB="$dir"; fi
done
if [ -n "$GROKLENS_TORCH_LIB" ] && [[ ":${LD_LIBRARY_PATH:-}:" != *":$GROKLENS_TORCH_LIB:"* ]]; then
  export LD_LIBRARY_PATH="$GROKLENS_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# Where evcxr compiles the notebooks' crates, kept between runs (kernel.sh has the same default).
export EVCXR_TMPDIR="${EVCXR_TMPDIR:-$GROKLENS_HOME/evcxr}"
