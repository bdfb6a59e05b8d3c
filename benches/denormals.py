"""Counts float32 subnormals (nonzero, below 1.18e-38) in a trained model's forward
and backward pass, and times a matrix product with and without them on this CPU.

    bash scripts/setup.sh --reference && source scripts/env.sh
    $GROKLENS_VENV/bin/python benches/denormals.py tests/data/runs/seed

Reads PREFIX_config.json and PREFIX_final.safetensors (a TransformerLens state dict).
x86 CPUs that handle subnormals in microcode slow down many times on them; a CPU that
handles them in hardware shows equal times in the last line.
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

prefix = sys.argv[1]
config = json.load(open(prefix + "_config.json"))
task, m = config["task"], config["model"]
p = task["p"]
model = HookedTransformer(HookedTransformerConfig(
    n_layers=m["n_layers"], n_heads=m["n_heads"], d_model=m["d_model"], d_head=m["d_head"], d_mlp=m["d_mlp"],
    act_fn="relu", normalization_type=None, d_vocab=m["d_vocab"], d_vocab_out=m["d_vocab_out"], n_ctx=m["n_ctx"]))
model.load_state_dict(load_file(prefix + "_final.safetensors"), strict=False)

a, b = torch.arange(p).repeat_interleave(p), torch.arange(p).repeat(p)
term = lambda t, x: t["coeff"] * x ** t["power"]
labels = (term(task["g"], a) + term(task["h"], b)) % p
logits, cache = model.run_with_cache(torch.stack([a, b, torch.full_like(a, p)], 1))
loss = torch.nn.functional.cross_entropy(logits[:, -1].double(), labels)
loss.backward()

tiny = torch.finfo(torch.float32).tiny
subnormal = lambda t: int(((t != 0) & (t.abs() < tiny)).sum())
named = list(cache.items()) + [("grad " + n, q.grad) for n, q in model.named_parameters()]
# groklens's logit gradient: float64 (softmax - one-hot) / rows, cast to float32.
probs = logits[:, -1].detach().double().softmax(-1)
grad = ((probs - torch.nn.functional.one_hot(labels, p)) / len(labels)).float()
named += [("float32 softmax of the logits", logits[:, -1].detach().softmax(-1)), ("float32 logit gradient", grad)]
for name, t in named:
    print(f"{name}: {subnormal(t.detach())} of {t.numel()} subnormal")


def ms_per_product(x, w):
    for _ in range(3):
        x @ w
    start = time.perf_counter()
    for _ in range(50):
        x @ w
    return (time.perf_counter() - start) / 50 * 1e3


w = torch.randn(p, m["d_mlp"])
print(f"[{len(grad)}, {p}] x [{p}, {m['d_mlp']}]: logit gradient {ms_per_product(grad, w):.3f} ms, "
      f"its subnormals flushed to zero {ms_per_product(torch.where(grad.abs() < tiny, 0.0, grad), w):.3f} ms")
