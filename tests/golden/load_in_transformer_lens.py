"""Loads a groklens checkpoint into TransformerLens, strictly, and prints its accuracy on
all p² pairs: the check that run files move to TransformerLens unchanged.

    python tests/golden/load_in_transformer_lens.py RUN_FOLDER [EPOCH]   (the last checkpoint by default)

Needs the pins of tests/golden/requirements.txt (scripts/setup.sh --reference)."""
import json
import pathlib
import sys

import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

run = pathlib.Path(sys.argv[1])
config = json.loads((run / "config.json").read_text())
m = config["model"]
cfg = HookedTransformerConfig(n_layers=m["n_layers"], n_heads=m["n_heads"], d_model=m["d_model"],
                              d_head=m["d_head"], d_mlp=m["d_mlp"], act_fn=m["act_fn"],
                              normalization_type=None, d_vocab=m["d_vocab"], d_vocab_out=m["d_vocab_out"],
                              n_ctx=m["n_ctx"], init_weights=True, device="cpu", seed=m["seed"])
model = HookedTransformer(cfg)
checkpoints = sorted((run / "checkpoints").glob("epoch_*.safetensors"))
path = run / "checkpoints" / f"epoch_{int(sys.argv[2]):06}.safetensors" if len(sys.argv) > 2 else checkpoints[-1]
print(path.name, model.load_state_dict(load_file(path), strict=True))

task, p = config["task"], config["task"]["p"]
def term(t, x):
    return (t["coeff"] * pow(x, t["power"], p)) % p
tokens = torch.tensor([[a, b, p] for a in range(p) for b in range(p)])
labels = torch.tensor([(term(task["g"], a) + term(task["h"], b)) % p for a in range(p) for b in range(p)])
with torch.inference_mode():
    accuracy = (model(tokens)[:, -1].argmax(-1) == labels).float().mean().item()
print(f"TransformerLens accuracy on all {p * p} pairs: {accuracy:.5f}")
