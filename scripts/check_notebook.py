#!/usr/bin/env python3
"""Fails unless an executed notebook has no error output and every chart displayed as a
chart: evcxr falls back to a value's Debug text when a cell's last expression cannot be
displayed (for example when it moves a variable of that cell), and such a chart would
otherwise go unnoticed. Prints "N charts displayed, 0 problems".

    python scripts/check_notebook.py notebooks/out/seed.ipynb
"""
import json
import sys


def main(path):
    notebook = json.load(open(path))
    charts, problems = 0, []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            if kind == "error":
                problems.append(f"cell {index}: error {output.get('ename', '')}: {output.get('evalue', '')}")
            data = output.get("data", {})
            if "application/vnd.plotly.v1+json" in data or "groklens" in "".join(data.get("text/html", [])):
                charts += 1
            elif "".join(data.get("text/plain", [])).lstrip("'[\"").startswith("Figure {"):
                problems.append(f"cell {index}: a chart came out as text (its last expression moves a variable?)")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{charts} charts displayed, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
