"""Golden reference values for groklens, produced by the real TransformerLens.

Run from the repository root, in a venv with the pins of tests/golden/requirements.txt:

    python tests/golden/make_golden.py

Writes tests/data/golden/<name>_{init,cache,golden}.safetensors/json for three configs
(`seed`: the seed notebook's p=113 model, `tiny`: a 1-layer toy, `tiny2l`: the same toy
with 2 layers) plus a few extra tensors (first gradients, tiny's state after 1 and 100
epochs). CPU only, one thread, fully deterministic: running it twice gives identical files.

INIT RECIPE (verified bit-for-bit by this script, for every config, see check_init_recipe)
-----------------------------------------------------------------------------------------
TransformerLens 2.18.0, HookedTransformer(cfg) with init_weights=True, init_mode="gpt2":

  1. HookedTransformerConfig.__post_init__ calls cfg.set_seed_everywhere(seed)
     (torch.manual_seed, random.seed, np.random.seed). HookedTransformer.__init__ then
     builds the modules; every parameter is created with torch.empty / torch.zeros
     (weights empty, biases zeros), so nothing consumes the RNG there -- and even if
     something did, it would not matter because of step 2.
  2. HookedTransformer.init_weights() calls torch.manual_seed(cfg.seed) AGAIN, right
     before initialising. This is the only seeding that matters for the weights.
  3. _init_weights_gpt2(): for name, param in self.named_parameters(): if "W_" in name:
     nn.init.normal_(param, std=cfg.initializer_range)   (mean 0).
     nn.init.normal_ is just `with no_grad: param.normal_(0, std)` on the default CPU
     generator, so `torch.manual_seed(seed)` followed by `param.normal_(0, std)` over the
     "W_" parameters in named_parameters() order reproduces the weights exactly.
     Biases (b_*) consume NO random numbers; they stay 0. Buffers (attn.mask, attn.IGNORE)
     consume none either.
  4. std = cfg.initializer_range = 0.8 / sqrt(d_model), computed with numpy float64
     (0.8/sqrt(128) = 0.07071067811865475 for the seed, 0.8/sqrt(16) = 0.2 for tiny) and
     handed to normal_ as a double.
  named_parameters() order (all float32) -- NOTE: W_O comes right after W_Q, and W_K/W_V
  come after b_Q/b_O, because AbstractAttention registers W_Q, W_O, b_Q, b_O and the
  Attention subclass registers W_K, W_V, b_K, b_V afterwards:
     embed.W_E [d_vocab, d_model], pos_embed.W_pos [n_ctx, d_model],
     blocks.L.attn.W_Q [h, d_model, d_head], blocks.L.attn.W_O [h, d_head, d_model],
     blocks.L.attn.b_Q [h, d_head], blocks.L.attn.b_O [d_model],
     blocks.L.attn.W_K [h, d_model, d_head], blocks.L.attn.W_V [h, d_model, d_head],
     blocks.L.attn.b_K [h, d_head], blocks.L.attn.b_V [h, d_head],
     blocks.L.mlp.W_in [d_model, d_mlp], blocks.L.mlp.b_in [d_mlp],
     blocks.L.mlp.W_out [d_mlp, d_model], blocks.L.mlp.b_out [d_model],
     (further blocks likewise), unembed.W_U [d_model, d_vocab_out], unembed.b_U [d_vocab_out].
  (state_dict() has the same order plus the buffers blocks.L.attn.mask [n_ctx, n_ctx] bool
  (lower-triangular causal mask) and blocks.L.attn.IGNORE (scalar float32 -inf) after b_V.)
  So the RNG stream is consumed by W_E, W_pos, then per block W_Q, W_O, W_K, W_V, W_in,
  W_out, then W_U, in that order, each tensor filled contiguously in its own row-major
  shape (e.g. W_Q as [h, d_model, d_head], not [d_model, h*d_head]).
  Every tensor has >= 16 elements, so libtorch's CPU normal_ takes its vectorised
  16-at-a-time Box-Muller path for all of them (the numel matters: the tail is handled
  by regenerating the last 16 values). The same call through tch (`tch::manual_seed`,
  `Tensor::normal_(0, std)` on same-shaped float32 CPU tensors) uses the same libtorch
  kernel and generator. The script also checks whether `torch.randn(shape) * std`
  gives the same bits (reported in the json as init_recipe.randn_times_std_matches).
  The parameters are created with torch.empty/zeros WITHOUT a device, i.e. on the CPU,
  initialised there, and only then moved to cfg.device -- so the seed's weights are the
  CPU-generator weights even when it trains on CUDA: initialise on the CPU, then move.
  Control checks in the json: filling in the "textbook" order W_Q, W_K, W_V, W_O does NOT
  match (init_recipe.order_QKVO_matches = false); drawing random numbers before
  constructing the model changes nothing (independent_of_prior_rng_state = true).

DETERMINISM: torch.set_num_threads(1) and torch.use_deterministic_algorithms(True).
Measured on the seed config (10 epochs): 1 thread, and 2 threads with deterministic
algorithms, give bit-identical losses; 2 threads WITHOUT deterministic algorithms (the
seed_loop.py default) differ by ~1e-9 after 10 epochs (a nondeterministic CPU backward).
The initial losses are identical in every setting.
"""
import json
import math
import os
import sys
import time

import einops
import numpy as np
import torch
import transformer_lens
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT_DIR = os.path.join("tests", "data", "golden")
EPOCHS = 100
LR, WD, BETAS = 1e-3, 1.0, (0.9, 0.98)

CONFIGS = {
    "seed": dict(p=113, m=4, n=4, frac_train=0.3, data_seed=598, n_layers=1, n_heads=4,
                 d_model=128, d_head=32, d_mlp=512, seed=999, train=True,
                 rows=[0, 1, 2, 113, 500, 1000, 2000, 3000, 4321, 5000, 6000, 7000,
                       8000, 9999, 12000, 12768]),
    "tiny": dict(p=11, m=2, n=3, frac_train=0.5, data_seed=7, n_layers=1, n_heads=2,
                 d_model=16, d_head=8, d_mlp=32, seed=3, train=True,
                 rows=[0, 1, 2, 11, 12, 20, 33, 45, 57, 60, 71, 88, 99, 100, 110, 120]),
    # forward-only variant (2 layers): init + cache + initial losses
    "tiny2l": dict(p=11, m=2, n=3, frac_train=0.5, data_seed=7, n_layers=2, n_heads=2,
                   d_model=16, d_head=8, d_mlp=32, seed=3, train=False,
                   rows=[0, 1, 2, 11, 12, 20, 33, 45, 57, 60, 71, 88, 99, 100, 110, 120]),
}


def make_data(p, m, n, frac_train, data_seed):
    """Exactly the seed notebook's dataset and split (equals token = p)."""
    a_vector = einops.repeat(torch.arange(p), "i -> (i j)", j=p)
    b_vector = einops.repeat(torch.arange(p), "j -> (i j)", i=p)
    equals_vector = einops.repeat(torch.tensor(p), " -> (i j)", i=p, j=p)
    dataset = torch.stack([a_vector, b_vector, equals_vector], dim=1)
    labels = (dataset[:, 0] ** m + dataset[:, 1] ** n) % p
    torch.manual_seed(data_seed)
    indices = torch.randperm(p * p)
    cutoff = int(p * p * frac_train)
    return dataset, labels, indices[:cutoff], indices[cutoff:]


def make_cfg(c):
    return HookedTransformerConfig(
        n_layers=c["n_layers"], n_heads=c["n_heads"], d_model=c["d_model"],
        d_head=c["d_head"], d_mlp=c["d_mlp"], act_fn="relu", normalization_type=None,
        d_vocab=c["p"] + 1, d_vocab_out=c["p"], n_ctx=3, init_weights=True, device="cpu",
        n_devices=1, seed=c["seed"])


def loss_fn(logits, labels):
    if len(logits.shape) == 3:
        logits = logits[:, -1]
    logits = logits.to(torch.float64)
    log_probs = logits.log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=labels[:, None])[:, 0].mean()


def tensors_for_file(d):
    return {k: v.detach().clone().contiguous() for k, v in d.items()}


def check_init_recipe(model, cfg):
    """Reproduce the init by hand; return a dict of findings (asserts bit-exactness)."""
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    std = cfg.initializer_range
    # Recipe: manual_seed(seed), then param.normal_(0, std) over "W_" params in order.
    torch.manual_seed(cfg.seed)
    mine = {}
    for name, param in model.named_parameters():
        t = torch.zeros_like(param)
        if "W_" in name:
            t.normal_(0.0, std)
        mine[name] = t
    exact = all(torch.equal(ref[k], mine[k]) for k in ref)
    assert exact, "init recipe does not reproduce TransformerLens bit-for-bit"
    # Variant: torch.randn(shape) * std (float32 multiply).
    torch.manual_seed(cfg.seed)
    randn_ok = True
    for name, param in model.named_parameters():
        if "W_" in name:
            t = torch.randn(param.shape, dtype=param.dtype) * std
            randn_ok &= torch.equal(t, ref[name])
    # Negative control: the "textbook" order W_Q, W_K, W_V, W_O (not named_parameters order).
    torch.manual_seed(cfg.seed)
    order = ["embed.W_E", "pos_embed.W_pos"]
    for L in range(cfg.n_layers):
        order += [f"blocks.{L}.attn.W_{x}" for x in "QKVO"]
        order += [f"blocks.{L}.mlp.W_in", f"blocks.{L}.mlp.W_out"]
    order += ["unembed.W_U"]
    params = dict(model.named_parameters())
    qkvo_ok = all(torch.equal(torch.empty_like(params[k]).normal_(0.0, std), ref[k])
                  for k in order)
    # Variant: would reseeding twice (set_seed_everywhere then manual_seed) matter? No:
    # the last manual_seed wins. Check that an unrelated draw before init changes nothing
    # by constructing a model after consuming RNG.
    torch.manual_seed(12345)
    torch.randn(1000)
    model2 = HookedTransformer(make_cfg_from(cfg))
    indep = all(torch.equal(ref[k], v) for k, v in model2.named_parameters())
    return {
        "recipe": "torch.manual_seed(cfg.seed); for name, p in named_parameters(): "
                  "if 'W_' in name: p.normal_(0, initializer_range)",
        "bit_exact": bool(exact),
        "randn_times_std_matches": bool(randn_ok),
        "order_QKVO_matches": bool(qkvo_ok),
        "rng_order": [k for k, _ in model.named_parameters() if "W_" in k],
        "independent_of_prior_rng_state": bool(indep),
        "biases_all_zero": bool(all((ref[k] == 0).all() for k in ref if "b_" in k)),
    }


def make_cfg_from(cfg):
    return HookedTransformerConfig(
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_model=cfg.d_model, d_head=cfg.d_head,
        d_mlp=cfg.d_mlp, act_fn=cfg.act_fn, normalization_type=None, d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out, n_ctx=cfg.n_ctx, init_weights=True, device="cpu",
        n_devices=1, seed=cfg.seed)


def run_config(name, c):
    t0 = time.perf_counter()
    dataset, labels, train_idx, test_idx = make_data(
        c["p"], c["m"], c["n"], c["frac_train"], c["data_seed"])
    train_data, train_labels = dataset[train_idx], labels[train_idx]
    test_data, test_labels = dataset[test_idx], labels[test_idx]

    cfg = make_cfg(c)
    model = HookedTransformer(cfg)
    model.eval()  # no dropout exists; eval() changes nothing but is explicit
    init_sd = tensors_for_file(model.state_dict())
    save_file(init_sd, os.path.join(OUT_DIR, f"{name}_init.safetensors"))
    param_info = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                  for k, v in model.named_parameters()]
    state_info = [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                  for k, v in model.state_dict().items()]

    init_check = check_init_recipe(model, cfg)

    rows = torch.tensor(c["rows"], dtype=torch.int64)
    toks = dataset[rows]
    with torch.inference_mode():
        logits, cache = model.run_with_cache(toks)
    cache_t = {k: v for k, v in cache.items()}
    cache_t["logits"] = logits
    cache_t["rows"] = rows
    cache_t["tokens"] = toks
    save_file(tensors_for_file(cache_t), os.path.join(OUT_DIR, f"{name}_cache.safetensors"))
    scores = cache["blocks.0.attn.hook_attn_scores"]
    masked = scores[0, 0, 0, 1].item()

    for pname, param in model.named_parameters():
        if "b_" in pname:
            param.requires_grad = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, betas=BETAS)

    with torch.inference_mode():
        init_train = loss_fn(model(train_data), train_labels).item()
        init_test = loss_fn(model(test_data), test_labels).item()

    out = {
        "name": name,
        "p": c["p"], "m": c["m"], "n": c["n"], "frac_train": c["frac_train"],
        "data_seed": c["data_seed"], "model_seed": c["seed"],
        "config": {k: getattr(cfg, k) for k in [
            "n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "d_vocab_out",
            "n_ctx", "act_fn", "normalization_type", "initializer_range", "init_mode",
            "use_attn_scale", "attn_scale", "positional_embedding_type", "attention_dir"]},
        "optimizer": {"type": "AdamW", "lr": LR, "weight_decay": WD, "betas": list(BETAS),
                      "eps": 1e-8, "frozen": "parameters whose name contains 'b_'"},
        "n_train": len(train_idx), "n_test": len(test_idx),
        "train_rows_first5": train_data[:5].tolist(),
        "train_labels_first5": train_labels[:5].tolist(),
        "test_rows_first5": test_data[:5].tolist(),
        "test_labels_first5": test_labels[:5].tolist(),
        "train_indices": train_idx.tolist(),
        "test_indices": test_idx.tolist(),
        "cache_rows": c["rows"],
        "cache_keys": list(cache_t.keys()),
        "masked_attn_score": "-inf" if masked == -math.inf else masked,
        "init_train_loss": init_train,
        "init_test_loss": init_test,
        "named_parameters": param_info,
        "state_dict": state_info,
        "init_recipe": init_check,
    }

    if c["train"]:
        state0 = {k: v.clone() for k, v in model.state_dict().items()}
        train_losses, test_losses = train_peer(name, model, optimizer, train_data, train_labels,
                                               test_data, test_labels, save=True)
        if name == "tiny":
            save_file(tensors_for_file(model.state_dict()),
                      os.path.join(OUT_DIR, f"{name}_after100.safetensors"))
        with torch.inference_mode():
            la = model(toks)[:, -1]
        if name == "seed":
            # The peer against itself: the same loop from the same weights, run the way
            # seed_loop.py runs (2 threads, nondeterministic CPU kernels). Early training
            # of the seed config amplifies rounding differences, so this bounds how close
            # any reimplementation can be expected to stay.
            torch.set_num_threads(2)
            torch.use_deterministic_algorithms(False)
            model.load_state_dict(state0)
            rerun_opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, betas=BETAS)
            rerun = train_peer(name, model, rerun_opt, train_data, train_labels, test_data,
                               test_labels, save=False)
            out.update({"peer_rerun_2threads_train_losses": rerun[0],
                        "peer_rerun_2threads_test_losses": rerun[1]})
            torch.set_num_threads(1)
            torch.use_deterministic_algorithms(True)
        out.update({
            "epochs": EPOCHS,
            "train_losses": train_losses,
            "test_losses": test_losses,
            "logits_after_100": la.tolist(),
        })
    out["versions"] = {"torch": torch.__version__,
                       "transformer_lens": _tl_version(),
                       "numpy": np.__version__, "python": sys.version.split()[0]}
    out["command"] = "python tests/golden/make_golden.py"
    out["threads"] = torch.get_num_threads()
    write_json(os.path.join(OUT_DIR, f"{name}_golden.json"), out)
    print(f"{name}: n_train={out['n_train']} first labels={out['train_labels_first5']} "
          f"init train/test={init_train:.17g}/{init_test:.17g} "
          + (f"epoch100 train/test={out['train_losses'][-1]:.17g}/{out['test_losses'][-1]:.17g} "
             if c["train"] else "")
          + f"masked={out['masked_attn_score']} init={init_check} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def optimizer_state(model, optimizer):
    """Weights and AdamW moments at the start of an epoch, so that a reimplementation can
    take the next steps from exactly the peer's state (the seed's early training amplifies
    rounding, so whole trajectories cannot agree as closely as single steps)."""
    out = {}
    for k, v in model.named_parameters():
        out[f"param.{k}"] = v.detach()
        if v in optimizer.state:
            st = optimizer.state[v]
            out[f"exp_avg.{k}"] = st["exp_avg"]
            out[f"exp_avg_sq.{k}"] = st["exp_avg_sq"]
            out["step"] = st["step"].reshape(1).to(torch.int64)
    return out


def train_peer(name, model, optimizer, train_data, train_labels, test_data, test_labels, save):
    """The seed's loop for EPOCHS epochs; with save, also writes the first gradients
    (and for tiny the weights after one epoch)."""
    train_losses, test_losses = [], []
    for epoch in range(EPOCHS):
        if save and name == "seed" and epoch in (40, 80):
            save_file(tensors_for_file(optimizer_state(model, optimizer)),
                      os.path.join(OUT_DIR, f"{name}_state{epoch}.safetensors"))
        train_loss = loss_fn(model(train_data), train_labels)
        train_loss.backward()
        train_losses.append(train_loss.item())
        if epoch == 0 and save:
            grads = {k: v.grad for k, v in model.named_parameters() if v.grad is not None}
            save_file(tensors_for_file(grads), os.path.join(OUT_DIR, f"{name}_grads0.safetensors"))
        optimizer.step()
        optimizer.zero_grad()
        if epoch == 0 and save and name == "tiny":
            save_file(tensors_for_file(model.state_dict()),
                      os.path.join(OUT_DIR, f"{name}_after1.safetensors"))
        with torch.inference_mode():
            test_losses.append(loss_fn(model(test_data), test_labels).item())
    return train_losses, test_losses


def write_json(path, obj):
    """One top-level key per line, values compact (floats as Python repr: round-trip exact)."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in obj.items()]
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def _tl_version():
    try:
        from importlib.metadata import version
        return version("transformer-lens")
    except Exception:
        return getattr(transformer_lens, "__version__", "unknown")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    t0 = time.perf_counter()
    only = sys.argv[1:] or list(CONFIGS)
    for name in only:
        run_config(name, CONFIGS[name])
    for fn in os.listdir(OUT_DIR):  # safetensors writes 0600; make the files readable
        os.chmod(os.path.join(OUT_DIR, fn), 0o644)
    print(f"total {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
