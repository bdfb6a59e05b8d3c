#!/usr/bin/env python3
"""Check that an HTML page's plotly charts draw offline.

Opens the page in headless Chromium with the network off (every request that is not
file:// or data: is aborted), waits until every chart container (`.plotly-graph-div`)
has been drawn by plotly.js (it has `_fullLayout` and a `.main-svg` child) or nothing has
changed for --settle seconds, and exits 1 unless all of them drew and no script error,
console error, failed request or blocked request was seen. `--allow-blocked` lists
blocked requests without failing on them (nbconvert's page template loads require.js
and MathJax from a CDN, which no chart here needs). The last line printed is a summary,
e.g. "12 charts drawn, 0 errors".

Needs the `playwright` pip package (no `playwright install`: it drives Debian's
/usr/bin/chromium).

    python check_html.py report.html [--expect 12] [--timeout 60] [--screenshot page.png]
"""

import argparse
import pathlib
import sys
import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# One entry per chart container: its id and whether plotly.js drew it.
CHART_STATE = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(el => ({
    id: el.id,
    drawn: !!(el._fullLayout && el.querySelector('.main-svg')),
}))"""


def check(page_path, chromium, timeout, settle, screenshot):
    """Returns (charts, undrawn ids, errors, blocked urls)."""
    errors, blocked = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_offline(True)

        def route(r):
            url = r.request.url
            if url.startswith(("file:", "data:", "blob:", "about:")):
                r.continue_()
            else:
                blocked.append(url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(f"script error: {e}"))

        def console(m):
            # Chromium's "Failed to load resource" duplicates a failed request.
            if m.type == "error" and not m.text.startswith("Failed to load resource"):
                errors.append(f"console error: {m.text[:300]}")

        def failed(r):
            if r.url not in blocked:
                errors.append(f"failed request: {r.url[:200]} ({r.failure})")

        page.on("console", console)
        page.on("requestfailed", failed)
        try:
            page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=timeout * 1000)
        except PlaywrightError as e:
            errors.append(f"page did not load: {e.message.splitlines()[0]}")
        start = last_change = time.monotonic()
        last_drawn = -1
        while True:
            charts = page.evaluate(CHART_STATE)
            undrawn = [c["id"] for c in charts if not c["drawn"]]
            now = time.monotonic()
            if len(charts) - len(undrawn) != last_drawn:
                last_drawn, last_change = len(charts) - len(undrawn), now
            if charts and not undrawn or now - start > timeout or now - last_change > settle:
                break
            page.wait_for_timeout(250)
        page.wait_for_timeout(500)  # let late errors arrive
        if screenshot:
            page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return charts, undrawn, errors, list(dict.fromkeys(blocked))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=pathlib.Path)
    ap.add_argument("--expect", type=int, help="exact number of charts the page must have")
    ap.add_argument("--timeout", type=float, default=120.0, help="most seconds to wait for drawing")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="stop waiting after this many seconds without a new chart drawn")
    ap.add_argument("--allow-blocked", action="store_true",
                    help="blocked requests to the network do not fail the check")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshot", help="write a full-page PNG here")
    args = ap.parse_args()
    if not args.page.is_file():
        print(f"no such file: {args.page}")
        return 2

    charts, undrawn, problems, blocked = check(
        args.page, args.chromium, args.timeout, args.settle, args.screenshot
    )
    for url in blocked:
        print(f"blocked request: {url[:200]}", file=sys.stderr)
    if not args.allow_blocked:
        problems += [f"blocked request: {url[:200]}" for url in blocked]
    for chart_id in undrawn:
        problems.append(f"chart not drawn: #{chart_id}")
    if not charts:
        problems.append("no chart containers (.plotly-graph-div) on the page")
    if args.expect is not None and len(charts) != args.expect:
        problems.append(f"expected {args.expect} charts, found {len(charts)}")
    for p in problems:
        if not p.startswith("blocked request"):
            print(p, file=sys.stderr)
    summary = f"{len(charts) - len(undrawn)} charts drawn"
    if undrawn:
        summary += f", {len(undrawn)} not drawn"
    summary += f", {len(problems)} errors"
    if blocked and args.allow_blocked:
        summary += f" ({len(blocked)} blocked requests allowed)"
    print(summary)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
