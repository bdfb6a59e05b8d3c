"""Golden values for groklens's measures (src/fourier.rs, src/measures/), made by the seed
notebook's own analysis cells run on a small model with the real TransformerLens.

Run from the repository root, in the venv of tests/golden/requirements.txt:

    python tests/golden/make_measures_golden.py

Two models of the `tiny` config of make_golden.py (p = 11, (a^2 + b^3) mod 11, 1 layer,
d_mlp 32), loaded into a TransformerLens HookedTransformer: tests/data/golden/tiny_after100.safetensors
(100 epochs, little structure yet) and tests/data/measures/tiny_trained.safetensors, the
same init trained here for 3000 epochs by the seed's own loop (saved by this script). The seed's cells are copied below with the
only changes needed to run them here: p = 11 instead of 113, the CPU instead of CUDA,
and key_freqs = list(range(1, p // 2 + 1)) -- "every frequency", which is exactly what
the seed's `key_freqs = list(range(1, 57))` is for p = 113.

Besides the seed's own numbers, a few references for what the seed lacks are computed
here the plain, slow way, to check the fast Rust versions against:
  * excluded loss with the cosine projection subtracted ONCE (both waves, and cosines
    alone), and the TransformerLens grokking demo's restricted loss;
  * the same for a key set of two frequencies, [2, 4];
  * the task view (u = a^m, v = b^n mod p): an explicit p^3 cube cos(2 pi k (u + v - c)/p)
    for the logit coefficients, and a least-squares projection (torch.linalg.lstsq over
    the p^2 inputs) for the excluded loss.

Writes tests/data/measures/tiny_measures.json (sections `after100` and `trained`; the
seed's NaN for a dead neuron is written as null) and tiny_trained.safetensors. CPU, one
thread, deterministic algorithms.
"""
import json
import os

import einops
import numpy as np
import torch
from fancy_einsum import einsum
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

import make_golden

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
OUT = os.path.join(ROOT, "tests", "data", "measures", "tiny_measures.json")
TRAINED = os.path.join(ROOT, "tests", "data", "measures", "tiny_trained.safetensors")


def seed_fourier_basis(p):
    # --- seed cell In [39] ---
    fourier_basis = []
    fourier_basis_names = []
    fourier_basis.append(torch.ones(p))
    fourier_basis_names.append("Constant")
    for freq in range(1, p // 2 + 1):
        fourier_basis.append(torch.sin(torch.arange(p) * 2 * torch.pi * freq / p))
        fourier_basis_names.append(f"Sin {freq}")
        fourier_basis.append(torch.cos(torch.arange(p) * 2 * torch.pi * freq / p))
        fourier_basis_names.append(f"Cos {freq}")
    fourier_basis = torch.stack(fourier_basis, dim=0)
    fourier_basis = fourier_basis / fourier_basis.norm(dim=-1, keepdim=True)
    return fourier_basis, fourier_basis_names


def seed_neuron_freq_norm(p, neuron_acts, fourier_basis, d_mlp):
    # --- seed cells In [45], In [46] ---
    fourier_neuron_acts = fourier_basis @ einops.rearrange(neuron_acts, "(a b) neuron -> neuron a b", a=p, b=p) @ fourier_basis.T
    fourier_neuron_acts[:, 0, 0] = 0.
    neuron_freq_norm = torch.zeros(p // 2, d_mlp)
    for freq in range(0, p // 2):
        for x in [0, 2 * (freq + 1) - 1, 2 * (freq + 1)]:
            for y in [0, 2 * (freq + 1) - 1, 2 * (freq + 1)]:
                neuron_freq_norm[freq] += fourier_neuron_acts[:, x, y] ** 2
    neuron_freq_norm = neuron_freq_norm / fourier_neuron_acts.pow(2).sum(dim=[-1, -2])[None, :]
    return neuron_freq_norm


def seed_cos_cube(p):
    # --- seed cell In [55] ---
    cos_cube = []
    for freq in range(1, p // 2 + 1):
        a = torch.arange(p)[:, None, None]
        b = torch.arange(p)[None, :, None]
        c = torch.arange(p)[None, None, :]
        cube_predicted_logits = torch.cos(freq * 2 * torch.pi / p * (a + b - c))
        cube_predicted_logits /= cube_predicted_logits.norm()
        cos_cube.append(cube_predicted_logits)
    return torch.stack(cos_cube, dim=0)


def seed_periodicity(model, dataset, p, cos_cube):
    # --- seed cells In [56], In [58], In [60] ---
    logits = model(dataset)[:, -1]
    logits = einops.rearrange(logits, "(a b) c -> a b c", a=p, b=p)
    vals = (cos_cube * logits[None, :, :, :]).sum([-3, -2, -1])
    cos_sim = vals / logits.norm()
    residual = logits - (vals[:, None, None, None] * cos_cube).sum(dim=0)
    return vals, cos_sim, residual.norm() / logits.norm()


def seed_fourier_norms(p, neuron_acts, fourier_basis):
    # --- seed cell In [62] ---
    neuron_acts_square = einops.rearrange(neuron_acts, "(a b) neur -> a b neur", a=p, b=p).clone()
    neuron_acts_square -= einops.reduce(neuron_acts_square, "a b neur -> 1 1 neur", "mean")
    neuron_acts_square_fourier = einsum("a b neur, fa a, fb b -> fa fb neur", neuron_acts_square, fourier_basis, fourier_basis)
    return neuron_acts_square_fourier.norm(dim=-1)


def seed_excluded_loss_buggy(model, dataset, p, key_freqs, train_indices, train_labels):
    # --- seed cell In [65], verbatim but for .cuda(): the cosine block is pasted twice ---
    logits, cache = model.run_with_cache(dataset)
    logits = logits[:, -1, :]
    neuron_acts = cache["post", 0, "mlp"][:, -1, :]
    approx_neuron_acts = torch.zeros_like(neuron_acts)
    a = torch.arange(p)[:, None]
    b = torch.arange(p)[None, :]
    for freq in key_freqs:
        cos_apb_vec = torch.cos(freq * 2 * torch.pi / p * (a + b))
        cos_apb_vec /= cos_apb_vec.norm()
        cos_apb_vec = einops.rearrange(cos_apb_vec, "a b -> (a b) 1")
        approx_neuron_acts += (neuron_acts * cos_apb_vec).sum(dim=0) * cos_apb_vec

        cos_apb_vec = torch.cos(freq * 2 * torch.pi / p * (a + b))
        cos_apb_vec /= cos_apb_vec.norm()
        cos_apb_vec = einops.rearrange(cos_apb_vec, "a b -> (a b) 1")
        approx_neuron_acts += (neuron_acts * cos_apb_vec).sum(dim=0) * cos_apb_vec
    excluded_neuron_acts = neuron_acts - approx_neuron_acts
    residual_stream_final = excluded_neuron_acts @ model.blocks[0].mlp.W_out + cache["resid_mid", 0][:, -1, :]
    excluded_logits = residual_stream_final @ model.unembed.W_U
    return make_golden.loss_fn(excluded_logits[train_indices], train_labels)


def excluded_loss_once(model, dataset, p, key_freqs, train_indices, train_labels, sines=True):
    # The seed's cell with the duplicate removed and (optionally) the sine block restored.
    logits, cache = model.run_with_cache(dataset)
    neuron_acts = cache["post", 0, "mlp"][:, -1, :]
    approx_neuron_acts = torch.zeros_like(neuron_acts)
    a = torch.arange(p)[:, None]
    b = torch.arange(p)[None, :]
    for freq in key_freqs:
        waves = [torch.cos] + ([torch.sin] if sines else [])
        for wave in waves:
            vec = wave(freq * 2 * torch.pi / p * (a + b))
            vec /= vec.norm()
            vec = einops.rearrange(vec, "a b -> (a b) 1")
            approx_neuron_acts += (neuron_acts * vec).sum(dim=0) * vec
    excluded_neuron_acts = neuron_acts - approx_neuron_acts
    residual_stream_final = excluded_neuron_acts @ model.blocks[0].mlp.W_out + cache["resid_mid", 0][:, -1, :]
    excluded_logits = residual_stream_final @ model.unembed.W_U
    return make_golden.loss_fn(excluded_logits[train_indices], train_labels)


def restricted_loss_demo(model, dataset, p, key_freqs, test_indices, test_labels):
    # TransformerLens's Grokking demo, get_restricted_loss (the seed has none).
    logits, cache = model.run_with_cache(dataset)
    logits = logits[:, -1, :]
    neuron_acts = cache["post", 0, "mlp"][:, -1, :]
    approx_neuron_acts = torch.zeros_like(neuron_acts)
    approx_neuron_acts += neuron_acts.mean(dim=0)
    a = torch.arange(p)[:, None]
    b = torch.arange(p)[None, :]
    for freq in key_freqs:
        cos_apb_vec = torch.cos(freq * 2 * torch.pi / p * (a + b))
        cos_apb_vec /= cos_apb_vec.norm()
        cos_apb_vec = einops.rearrange(cos_apb_vec, "a b -> (a b) 1")
        approx_neuron_acts += (neuron_acts * cos_apb_vec).sum(dim=0) * cos_apb_vec
        sin_apb_vec = torch.sin(freq * 2 * torch.pi / p * (a + b))
        sin_apb_vec /= sin_apb_vec.norm()
        sin_apb_vec = einops.rearrange(sin_apb_vec, "a b -> (a b) 1")
        approx_neuron_acts += (neuron_acts * sin_apb_vec).sum(dim=0) * sin_apb_vec
    restricted_logits = approx_neuron_acts @ model.blocks[0].mlp.W_out @ model.unembed.W_U
    restricted_logits += logits.mean(dim=0, keepdim=True) - restricted_logits.mean(dim=0, keepdim=True)
    return make_golden.loss_fn(restricted_logits[test_indices], test_labels)


def task_view_cube_coeffs(logits, p, m, n):
    # Explicit p^3 cube in the task's variables, float64.
    u = (torch.arange(p) ** m % p).to(torch.float64)[:, None, None]
    v = (torch.arange(p) ** n % p).to(torch.float64)[None, :, None]
    c = torch.arange(p).to(torch.float64)[None, None, :]
    L = einops.rearrange(logits.to(torch.float64), "(a b) c -> a b c", a=p, b=p)
    coeffs = []
    for freq in range(1, p // 2 + 1):
        cube = torch.cos(freq * 2 * torch.pi / p * (u + v - c))
        cube /= cube.norm()
        coeffs.append((L * cube).sum())
    coeffs = torch.stack(coeffs)
    return coeffs, coeffs / L.norm()


def task_view_excluded_loss(model, dataset, p, m, n, key_freqs, train_indices, train_labels):
    # Least-squares projection over the p^2 inputs onto cos/sin(2 pi k (u + v)/p), float64.
    logits, cache = model.run_with_cache(dataset)
    acts = cache["post", 0, "mlp"][:, -1, :].to(torch.float64)
    s = ((dataset[:, 0] ** m + dataset[:, 1] ** n) % p).to(torch.float64)
    cols = []
    for freq in key_freqs:
        cols += [torch.cos(freq * 2 * torch.pi / p * s), torch.sin(freq * 2 * torch.pi / p * s)]
    V = torch.stack(cols, dim=1)
    coef = torch.linalg.lstsq(V, acts, driver="gelsd").solution
    excluded = acts - V @ coef
    W_out = model.blocks[0].mlp.W_out.to(torch.float64)
    W_U = model.unembed.W_U.to(torch.float64)
    final = excluded @ W_out + cache["resid_mid", 0][:, -1, :].to(torch.float64)
    return make_golden.loss_fn((final @ W_U)[train_indices], train_labels)


def f(t):
    return float(t)


def lst(t):
    """A nested list of floats, NaN (the seed's 0/0 for a dead neuron) as null."""
    def clean(x):
        return [clean(y) for y in x] if isinstance(x, list) else (None if x != x else x)
    return clean(t.detach().to(torch.float64).tolist())


def train_seed_loop(model, train_data, train_labels, epochs):
    """The seed's training loop (cell In [27]), biases frozen, full batch."""
    for name, param in model.named_parameters():
        if "b_" in name:
            param.requires_grad = False
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad],
                                  lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    for _ in range(epochs):
        train_loss = make_golden.loss_fn(model(train_data), train_labels)
        train_loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def measures(model, p, m, n, dataset, labels, train_indices, test_indices):
    train_labels, test_labels = labels[train_indices], labels[test_indices]
    key_freqs = list(range(1, p // 2 + 1))  # the seed's "every frequency"
    out = {}
    with torch.no_grad():
        fourier_basis, names = seed_fourier_basis(p)
        out["fourier_basis"] = lst(fourier_basis)
        out["fourier_basis_names"] = names

        original_logits, cache = model.run_with_cache(dataset)
        neuron_acts = cache["post", 0, "mlp"][:, -1, :]
        out["neuron_freq_norm"] = lst(seed_neuron_freq_norm(p, neuron_acts, fourier_basis, model.cfg.d_mlp))
        out["fourier_norms"] = lst(seed_fourier_norms(p, neuron_acts, fourier_basis))
        W_E = model.embed.W_E[:-1]
        out["embed_fourier_norms"] = lst((fourier_basis @ W_E).norm(dim=-1))

        vals, cos_sim, residual = seed_periodicity(model, dataset, p, seed_cos_cube(p))
        out["cos_coeffs"] = lst(vals)
        out["cos_sim"] = lst(cos_sim)
        out["residual_cos_sim"] = f(residual)

        for name, keys in [("seed", key_freqs), ("two", TWO)]:
            out[f"excluded_loss_seed_buggy_{name}"] = f(seed_excluded_loss_buggy(model, dataset, p, keys, train_indices, train_labels))
            out[f"excluded_loss_once_{name}"] = f(excluded_loss_once(model, dataset, p, keys, train_indices, train_labels))
            out[f"excluded_loss_once_cos_{name}"] = f(excluded_loss_once(model, dataset, p, keys, train_indices, train_labels, sines=False))
            out[f"restricted_loss_{name}"] = f(restricted_loss_demo(model, dataset, p, keys, test_indices, test_labels))
            out[f"task_excluded_loss_{name}"] = f(task_view_excluded_loss(model, dataset, p, m, n, keys, train_indices, train_labels))
        out["train_loss"] = f(make_golden.loss_fn(original_logits[train_indices], train_labels))
        out["test_loss"] = f(make_golden.loss_fn(original_logits[test_indices], test_labels))

        coeffs, sims = task_view_cube_coeffs(original_logits[:, -1], p, m, n)
        out["task_cos_coeffs"] = lst(coeffs)
        out["task_cos_sim"] = lst(sims)
    return out


TWO = [2, 4]
TRAINED_EPOCHS = 3000


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    with open(os.path.join(GOLDEN, "tiny_golden.json")) as fh:
        g = json.load(fh)
    p, m, n = g["p"], g["m"], g["n"]
    c = dict(p=p, n_layers=1, n_heads=g["config"]["n_heads"], d_model=g["config"]["d_model"],
             d_head=g["config"]["d_head"], d_mlp=g["config"]["d_mlp"], seed=g["model_seed"])
    dataset, labels, train_indices, test_indices = make_golden.make_data(p, m, n, g["frac_train"], g["data_seed"])
    assert train_indices.tolist() == g["train_indices"]
    out = {"p": p, "m": m, "n": n, "key_freqs_two": TWO}

    model = HookedTransformer(make_golden.make_cfg(c))
    model.load_state_dict(load_file(os.path.join(GOLDEN, "tiny_after100.safetensors")), strict=False)
    out["after100"] = measures(model, p, m, n, dataset, labels, train_indices, test_indices)

    # A model with structure to find: the tiny init trained on by the seed's loop.
    model = HookedTransformer(make_golden.make_cfg(c))
    model.load_state_dict(load_file(os.path.join(GOLDEN, "tiny_init.safetensors")), strict=False)
    train_seed_loop(model, dataset[train_indices], labels[train_indices], TRAINED_EPOCHS)
    save_file(make_golden.tensors_for_file(model.state_dict()), TRAINED)
    out["trained"] = measures(model, p, m, n, dataset, labels, train_indices, test_indices)
    out["trained"]["epochs"] = TRAINED_EPOCHS

    out["versions"] = {"torch": torch.__version__, "numpy": np.__version__}
    out["command"] = "python tests/golden/make_measures_golden.py"
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"wrote {OUT} and {TRAINED}")


if __name__ == "__main__":
    main()
