#!/usr/bin/env bash
# Shows that check_html.py can fail: it must pass on pages the plot module wrote and
# fail on a broken chart, a page without plotly.js and a page that fetches it from a CDN.
# Run after `cargo test --release --test plot` (which writes the pages).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
dir="$here/../target/tmp"
status=0
expect() { # expect PASS|FAIL page [args…]
    local want=$1 page=$2; shift 2
    python "$here/check_html.py" "$dir/$page" --settle 5 "$@" >"$dir/check.out" 2>"$dir/check.err"; local rc=$?
    echo "check_html selftest: $page: $(tail -n1 "$dir/check.out") (exit $rc, want $want)"
    if { [ "$want" = PASS ] && [ $rc -ne 0 ]; } || { [ "$want" = FAIL ] && [ $rc -eq 0 ]; }; then
        sed 's/^/    /' "$dir/check.err" | head -n 5; status=1
    fi
}
expect PASS plot-good.html --expect 11
expect PASS plot-late.html --expect 3
expect FAIL plot-broken.html
expect FAIL plot-nojs.html
expect FAIL plot-cdn.html
exit $status
