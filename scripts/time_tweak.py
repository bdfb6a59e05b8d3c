#!/usr/bin/env python3
"""Time the key-frequency tweak in JupyterLab, as a reader meets it.

Starts JupyterLab on notebooks/ with the groklens kernel, opens NOTEBOOK in headless
Chromium, runs every cell (the training run must already exist, or it is trained), then
edits the tweak cell (the last code cell, `let key_set … explorer.show(&key_set)?;`) to
another key set and runs it, ROUNDS times. Each time is from the run command to the
moment the cell's output holds every chart drawn by plotly.js: evcxr compiling the cell,
the crate's recomputation, the output's transfer and the drawing, all included. Each
round also times two controls in the same cell: printing the key set alone (evcxr's
compile and the round trip, which any cell pays) and `explorer.charts` without showing
(the crate's share, timed inside the cell). Prints one line per round and the slowest.

    python scripts/time_tweak.py [notebooks/seed.ipynb] [--rounds 3] [--port 8899]
"""

import argparse
import os
import pathlib
import secrets
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from check_html import CHROMIUM_ARGS  # noqa: E402

# Key sets the rounds try in turn: the tweak a reader makes (drop, add, a different orbit).
KEY_SETS = ["vec![1, 8, 16]", "vec![1, 8, 16, 30, 53, 56, 3]", "vec![2, 7, 14, 28]"]

NOTEBOOK = "window.jupyterapp.shell.currentWidget.content"

# True once every code cell has run and the kernel is idle.
ALL_RAN = f"""() => {{
    const nb = {NOTEBOOK};
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel;
    const code = nb.widgets.filter(c => c.model.type === 'code');
    return kernel?.status === 'idle' && code.every(c => c.model.executionCount !== null);
}}"""

ERRORS = f"""() => {NOTEBOOK}.widgets.filter(c => c.model.type === 'code')
    .flatMap(c => Array.from({{length: c.model.outputs.length}}, (_, i) => c.model.outputs.get(i).toJSON()))
    .filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)"""

SET_TWEAK = f"""source => {{
    const nb = {NOTEBOOK};
    const i = nb.widgets.map(c => c.model.type).lastIndexOf('code');
    nb.activeCellIndex = i;
    nb.widgets[i].model.sharedModel.setSource(source);
    return i;
}}"""

# The text a cell printed.
CELL_TEXT = f"""i => {{
    const outputs = {NOTEBOOK}.widgets[i].model.outputs;
    return Array.from({{length: outputs.length}}, (_, j) => outputs.get(j).toJSON())
        .filter(o => o.output_type === 'stream').map(o => [].concat(o.text).join('')).join('');
}}"""

# Drawn charts in the tweak cell's output, and its execution count.
TWEAK_STATE = f"""i => {{
    const cell = {NOTEBOOK}.widgets[i];
    const charts = Array.from(cell.node.querySelectorAll('.plotly-graph-div'));
    return {{count: cell.model.executionCount,
             drawn: charts.filter(el => el._fullLayout && el.querySelector('.main-svg')).length,
             charts: charts.length}};
}}"""


def run_cell(page, source, charts):
    """Puts SOURCE in the tweak cell, runs it and waits until it has a new execution count
    (and, with CHARTS, every chart in its output drawn). Returns the seconds it took and
    the cell's printed text."""
    i = page.evaluate(SET_TWEAK, source)
    before = page.evaluate(TWEAK_STATE, i)["count"]
    start = time.monotonic()
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
    drawn = "s.charts > 0 && s.drawn === s.charts" if charts else "true"
    page.wait_for_function(f"() => {{ const s = ({TWEAK_STATE})({i}); return s.count !== {before} "
                           f"&& s.count !== null && {drawn}; }}", timeout=120_000, polling=20)
    elapsed = time.monotonic() - start
    return elapsed, page.evaluate(CELL_TEXT, i).strip()


def wait_for_server(url, lab, timeout=120):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if lab.poll() is not None:
            raise SystemExit(f"JupyterLab exited with status {lab.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"JupyterLab did not answer at {url}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", nargs="?", default="notebooks/seed.ipynb", type=pathlib.Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=8899)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--run-all-timeout", type=float, default=7200)
    args = ap.parse_args()
    token = secrets.token_hex(16)
    root = args.notebook.resolve().parent
    # JupyterLab saves the notebook it runs, outputs and edits included: put it back after.
    original = args.notebook.read_bytes()
    lab = subprocess.Popen(
        ["jupyter", "lab", "--no-browser", f"--port={args.port}", f"--IdentityProvider.token={token}",
         "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1"]
        # Jupyter refuses to serve as root (a container, CI) unless told to.
        + (["--allow-root"] if os.geteuid() == 0 else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    times = []
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_for_server(f"{base}/api?token={token}", lab)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{args.notebook.name}?token={token}")
            page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel",
                                   timeout=120_000)
            page.wait_for_function(f"() => {NOTEBOOK}.widgets.length > 0", timeout=60_000)
            start = time.monotonic()
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(ALL_RAN, timeout=args.run_all_timeout * 1000, polling=1000)
            print(f"all cells ran in {time.monotonic() - start:.1f} s")
            errors = page.evaluate(ERRORS)
            if errors:
                raise SystemExit("cells failed: " + "; ".join(errors))
            for round_ in range(args.rounds):
                keys = KEY_SETS[round_ % len(KEY_SETS)]
                set_keys = f"let key_set: Vec<i64> = {keys};\n"
                # Controls: the same cell printing only the set (evcxr's compile and the round
                # trip, the floor of any cell), and computing the charts without showing them
                # (the crate's share, printed by the cell).
                floor, _ = run_cell(page, set_keys + 'println!("{key_set:?}");', charts=False)
                _, crate = run_cell(page, set_keys + "let start = std::time::Instant::now();\n"
                                    "explorer.charts(&key_set)?;\n"
                                    'println!("{:.3}", start.elapsed().as_secs_f64());', charts=False)
                elapsed, _ = run_cell(page, set_keys + "explorer.show(&key_set)?;", charts=True)
                times.append(elapsed)
                print(f"tweak {round_ + 1}: key_set = {keys}: {elapsed:.2f} s, every chart drawn; "
                      f"controls: a cell printing the set {floor:.2f} s, the crate's charts() {float(crate):.2f} s")
            errors = page.evaluate(ERRORS)
            if errors:
                raise SystemExit("cells failed: " + "; ".join(errors))
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
        args.notebook.write_bytes(original)
    print(f"slowest tweak: {max(times):.2f} s over {len(times)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
