#!/usr/bin/env bash
# The "Rust (groklens)" Jupyter kernel (setup.sh copies it beside its kernel.json): evcxr,
# building in a persistent folder with the project's own Cargo.lock, so that notebooks are
# built with exactly the crate versions that the tests were built with. Jupyter starts a
# kernel in the notebook's folder; the project is the nearest folder above it with a Cargo.lock.
set -euo pipefail
# evcxr builds in EVCXR_TMPDIR/build; EVCXR_TMPDIR/.cargo/config.toml is ours (evcxr
# rewrites the build folder's own), and cargo reads both.
base="${EVCXR_TMPDIR:-$GROKLENS_HOME/evcxr}"
export EVCXR_TMPDIR="$base/build"
mkdir -p "$EVCXR_TMPDIR"
project="$PWD"
while [ "$project" != / ] && [ ! -f "$project/Cargo.lock" ]; do project="$(dirname "$project")"; done
rm -f "$base/.cargo/config.toml"
if [ -f "$project/Cargo.lock" ] && [ -f "$project/Cargo.toml" ]; then
  # evcxr's first build (before any cell adds groklens) prunes a lock copied into its
  # build folder, and cargo then takes the newest versions. So the build reads
  # crates.io from a vendored copy of exactly Cargo.lock's versions (one folder per
  # lock, made once, renamed into place whole).
  cp "$project/Cargo.lock" "$EVCXR_TMPDIR/Cargo.lock"
  vendor="$GROKLENS_HOME/vendor/$(sha256sum "$project/Cargo.lock" | cut -c1-16)"
  if [ ! -d "$vendor" ]; then
    mkdir -p "$GROKLENS_HOME/vendor"
    partial="$(mktemp -d "$GROKLENS_HOME/vendor/partial.XXXXXX")"
    if cargo vendor --locked --versioned-dirs --manifest-path "$project/Cargo.toml" "$partial/crates" >/dev/null 2>"$partial/log"; then
      mv "$partial/crates" "$vendor" 2>/dev/null || true # another kernel may have made it first
    else
      echo "kernel.sh: cargo vendor failed, so notebooks build with the newest crate versions, not Cargo.lock's:" >&2
      cat "$partial/log" >&2
    fi
    rm -rf "$partial"
  fi
  if [ -d "$vendor" ]; then
    mkdir -p "$base/.cargo"
    printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "%s"\n' \
      "$vendor" >"$base/.cargo/config.toml"
  fi
fi
exec evcxr_jupyter "$@"
