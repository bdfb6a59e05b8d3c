#!/usr/bin/env python3
"""Click the key-frequency chooser on a page and check what it draws against the crate.

Opens PAGE (report.html or an exported notebook) in headless Chromium, offline, and for
each case sets the chooser's key set the way a reader does: clicking "none" and then
one checkbox per frequency, or picking a preset from the list. After each click it
reads the values the chooser's charts drew and compares them with what the crate
computes for that set: `groklens analyze RUN --key-freqs K` (analysis.json: the residual
fraction in both views, the embedding's and W_out·W_U's energy share, each neuron's
share, and excluded and restricted loss), on the run the page was made from. Exits 1 on
any difference beyond rounding (the page carries 6 significant digits).

    python check_chooser.py PAGE --run RUN --groklens target/release/groklens
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from check_html import CHROMIUM_ARGS  # noqa: E402

TOLERANCE = 2e-4  # relative, on values rounded to 6 significant digits

DRAWN = """root => {
    const out = {};
    root.querySelectorAll('[data-chart]').forEach(el => {
        out[el.dataset.chart] = Object.fromEntries((el.data || []).map(t => [t.name, t.y]));
    });
    out.key = root.dataset.keyFreqs;
    return out;
}"""


def crate_values(groklens, run, freqs):
    """What `groklens analyze --key-freqs` computes for the set."""
    with tempfile.TemporaryDirectory() as out:
        keys = ",".join(map(str, freqs))
        subprocess.run([groklens, "analyze", run, "--out", out, "--key-freqs", keys], check=True,
                       stdout=subprocess.DEVNULL)
        a = json.loads(pathlib.Path(out, "analysis.json").read_text())
    s = a["over_training"]
    return {
        "residual": {"a + b view": s["residual_fraction"]["standard"], "task view": s["residual_fraction"]["task"]},
        "energy": {"W_E over a": s["embed_energy_in_keys"], "W_out·W_U over c": s["logit_map_energy_in_keys"]},
        "neurons": {"neurons": sorted(a["final"]["neuron_share_in_keys"])},
        "losses": {"excluded (train)": s["excluded_loss"], "restricted (test)": s["restricted_loss"]},
    }


def compare(case, drawn, expected, preset):
    problems = []
    for chart, traces in expected.items():
        for name, want in traces.items():
            got = drawn.get(chart, {}).get(name)
            if chart == "losses" and not preset:
                if got is not None:
                    problems.append(f"{case}: {chart}/{name} drawn for a set that is not a preset")
                continue
            if got is None or len(got) != len(want):
                problems.append(f"{case}: {chart}/{name}: drew {None if got is None else len(got)} values, "
                                f"the crate has {len(want)}")
                continue
            worst = max((abs(g - w) / max(abs(w), 1e-3) for g, w in zip(got, want)), default=0.0)
            if worst > TOLERANCE:
                problems.append(f"{case}: {chart}/{name} differs from the crate by {worst:.2e} (relative)")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=pathlib.Path)
    ap.add_argument("--run", required=True, help="the run folder the page was made from")
    ap.add_argument("--groklens", required=True, help="the groklens binary")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    if not args.page.is_file():
        print(f"no such file: {args.page}")
        return 2

    problems, errors, checked = [], [], 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_offline(True)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(f"script error: {e}"))
        page.goto(args.page.resolve().as_uri(), wait_until="load")
        root = page.locator(".groklens-chooser").first
        root.wait_for(timeout=60_000)
        page.wait_for_function("document.querySelector('.groklens-chooser').dataset.keyFreqs !== undefined",
                               timeout=60_000)
        data = root.evaluate("root => root.groklensData")
        presets = data["presets"]
        ranked = next(p["freqs"] for p in presets if p["name"] == f"top {len(data['freqs'])}")
        # By checkbox: three frequencies of very different evidence, as a reader might try.
        by_hand = sorted({ranked[0], ranked[len(ranked) // 3], ranked[-1]})
        cases = [("checkboxes " + str(by_hand), by_hand, None)]
        for name in ["top 3", presets[-1]["name"], presets[1]["name"]]:
            index = next(i for i, p in enumerate(presets) if p["name"] == name)
            cases.append((f"preset '{name}'", presets[index]["freqs"], index))
        for case, freqs, index in cases:
            if index is None:
                root.locator("button[data-action=clear]").click()
                for k in freqs:
                    root.locator(f"input[data-freq='{k}']").click()
            else:
                root.locator("select.gl-presets").select_option(str(index))
            drawn = root.evaluate(DRAWN)
            if drawn["key"] != ",".join(map(str, freqs)):
                problems.append(f"{case}: the chooser shows the set {drawn['key']}, not {freqs}")
                continue
            is_preset = any(p["freqs"] == freqs for p in presets)
            problems += compare(case, drawn, crate_values(args.groklens, args.run, freqs), is_preset)
            checked += 1
        browser.close()
    problems += errors
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{checked} key sets clicked and compared with the crate, {len(problems)} errors")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
