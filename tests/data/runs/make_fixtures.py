"""Fixtures from real groklens runs, for the rule tests on real curves (tests/measures.rs):
four columns of a run's losses.csv at every epoch (as `analyze` reads them; the spike
rule needs every epoch), to six significant digits, and its config and final checkpoint.

    target/release/groklens train --out runs/seed                  # 25,000 epochs, (a^4 + b^4) mod 113
    target/release/groklens train --out runs/a_plus_b --m 1 --n 1  # the TransformerLens Grokking demo's run
    python tests/data/runs/make_fixtures.py runs/seed seed
    python tests/data/runs/make_fixtures.py runs/a_plus_b a_plus_b
"""
import os
import shutil
import sys

run, name = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(run, "losses.csv")) as f:
    header, *rows = f.read().splitlines()
columns = header.split(",")
keep = [columns.index(c) for c in ["epoch", "train_loss", "test_loss", "test_loss_unseen"]]
with open(os.path.join(here, f"{name}_losses.csv"), "w") as out:
    out.write(",".join(columns[i] for i in keep) + "\n")
    for row in rows:
        fields = row.split(",")
        out.write(",".join([fields[0]] + [f"{float(fields[i]):.6g}" for i in keep[1:]]) + "\n")
checkpoints = sorted(os.listdir(os.path.join(run, "checkpoints")))
shutil.copy(os.path.join(run, "checkpoints", checkpoints[-1]), os.path.join(here, f"{name}_final.safetensors"))
shutil.copy(os.path.join(run, "config.json"), os.path.join(here, f"{name}_config.json"))
print(f"{name}: {len(rows)} epochs, final checkpoint {checkpoints[-1]}")
