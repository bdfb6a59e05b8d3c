"""Writes the torch.save fixtures that tests/pth.rs reads, and expected.json.

Run it with the project's PyTorch (no other packages are needed):

    /root/.cache/groklens/venv/bin/python tests/data/pth/make_pth_fixtures.py

expected.json holds, for every fixture that should load, a description of the
saved object made by PyTorch itself (see `describe`), so the Rust tests compare
the reader against real PyTorch rather than against hand-typed numbers.  The
hostile fixtures are not described: loading them must fail.
"""

import builtins
import collections
import copy
import copyreg
import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Optional

import torch

OUT = Path(__file__).resolve().parent

# The TransformerLens grokking demo's model, shrunk: p = 7 tokens plus "=".
P, D_VOCAB, D_VOCAB_OUT, N_CTX = 7, 8, 7, 3
D_MODEL, N_HEADS, D_HEAD, D_MLP = 8, 2, 4, 16


class Node(torch.nn.Module):
    """A bare module, so state_dict() gives TransformerLens key names and
    the same OrderedDict-with-_metadata object that nn.Module writes."""


def tiny_hooked_transformer(seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)

    def param(*shape):
        return torch.nn.Parameter(torch.randn(*shape, generator=generator))

    model = Node()
    model.embed = Node()
    model.embed.W_E = param(D_VOCAB, D_MODEL)
    model.pos_embed = Node()
    model.pos_embed.W_pos = param(N_CTX, D_MODEL)
    block = Node()
    attn = Node()
    attn.W_Q = param(N_HEADS, D_MODEL, D_HEAD)
    attn.W_K = param(N_HEADS, D_MODEL, D_HEAD)
    attn.W_V = param(N_HEADS, D_MODEL, D_HEAD)
    attn.W_O = param(N_HEADS, D_HEAD, D_MODEL)
    attn.b_Q = param(N_HEADS, D_HEAD)
    attn.b_K = param(N_HEADS, D_HEAD)
    attn.b_V = param(N_HEADS, D_HEAD)
    attn.b_O = param(D_MODEL)
    attn.register_buffer("mask", torch.tril(torch.ones(N_CTX, N_CTX)).bool())
    attn.register_buffer("IGNORE", torch.tensor(-1e5))
    block.attn = attn
    mlp = Node()
    mlp.W_in = param(D_MODEL, D_MLP)
    mlp.b_in = param(D_MLP)
    mlp.W_out = param(D_MLP, D_MODEL)
    mlp.b_out = param(D_MODEL)
    block.mlp = mlp
    model.blocks = torch.nn.ModuleList([block])
    model.unembed = Node()
    model.unembed.W_U = param(D_MODEL, D_VOCAB_OUT)
    model.unembed.b_U = param(D_VOCAB_OUT)
    return model


def config_dict() -> dict:
    """Like HookedTransformerConfig.to_dict(): plain values plus a dtype and a device."""
    return {
        "n_layers": 1,
        "n_heads": N_HEADS,
        "d_model": D_MODEL,
        "d_head": D_HEAD,
        "d_mlp": D_MLP,
        "act_fn": "relu",
        "normalization_type": None,
        "d_vocab": D_VOCAB,
        "d_vocab_out": D_VOCAB_OUT,
        "n_ctx": N_CTX,
        "init_weights": True,
        "attn_only": False,
        "seed": 999,
        "lr": 1e-3,
        "weight_decay": 1.0,
        "betas": [0.9, 0.98],
        "frac_train": 0.3,
        "p": P,
        "dtype": torch.float32,
        "device": torch.device("cpu"),
    }


def fake_module(name: str) -> types.ModuleType:
    """Registers an importable module, so pickle records classes under `name`."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module


fake_module("transformer_lens")
_config_module = fake_module("transformer_lens.HookedTransformerConfig")


@dataclasses.dataclass
class HookedTransformerConfig:
    """A cut-down stand-in for transformer_lens' config dataclass."""

    n_layers: int
    d_model: int
    n_ctx: int
    d_head: int
    n_heads: int = 2
    d_mlp: Optional[int] = None
    act_fn: Optional[str] = "relu"
    d_vocab: int = -1
    d_vocab_out: int = -1
    normalization_type: Optional[str] = None
    device: Optional[str] = "cpu"
    seed: Optional[int] = None
    initializer_range: float = -1.0
    dtype: torch.dtype = torch.float32
    use_attn_result: bool = False
    original_architecture: Optional[str] = None
    extra: dict = dataclasses.field(default_factory=dict)
    layer_names: list = dataclasses.field(default_factory=list)


HookedTransformerConfig.__module__ = _config_module.__name__
_config_module.HookedTransformerConfig = HookedTransformerConfig


def hooked_transformer_config() -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=1,
        d_model=D_MODEL,
        n_ctx=N_CTX,
        d_head=D_HEAD,
        n_heads=N_HEADS,
        d_mlp=D_MLP,
        d_vocab=D_VOCAB,
        d_vocab_out=D_VOCAB_OUT,
        seed=999,
        initializer_range=0.2828,
        extra={"p": P, "fn_name": "add"},
        layer_names=["blocks.0"],
    )


def demo_small() -> dict:
    """The dict the TransformerLens grokking demo saves, for a tiny model."""
    torch.manual_seed(0)
    model = tiny_hooked_transformer(seed=1)
    checkpoints = []
    for step in range(3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.01 * (step + 1))
        checkpoints.append(copy.deepcopy(model.state_dict()))
    pairs = torch.randperm(P * P)
    n_train = int(0.3 * P * P)
    train_losses = [4.0 / (1 + 0.01 * i) for i in range(100)]
    test_losses = [4.5 / (1 + 0.001 * i) for i in range(100)]
    return {
        "model": model.state_dict(),
        "config": config_dict(),
        "checkpoints": checkpoints,
        "checkpoint_epochs": [99, 199, 299],
        "train_losses": train_losses,
        "test_losses": test_losses,
        "train_indices": pairs[:n_train],
        "test_indices": pairs[n_train:],
    }


def demo_dataclass_config() -> dict:
    return {
        "model": tiny_hooked_transformer(seed=2).state_dict(),
        "config": hooked_transformer_config(),
    }


def views() -> dict:
    """Tensors that are views, share storages, or have unusual dtypes, and
    objects the pickle refers to twice through its memo."""
    generator = torch.Generator().manual_seed(3)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    shared = torch.randn(2, 5, generator=generator)
    with_attribute = torch.tensor([5.0, 6.0])
    with_attribute.note = "written with _rebuild_from_type_v2"
    filled_later = {"x": 1}
    special = [0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-4, float("inf"), float("-inf"), float("nan")]
    return {
        "base": base,
        "base_again": base,
        "transposed": base.t(),
        "row_slice": base[1:3],
        "column_slice": base[:, 2:5],
        "every_other": torch.arange(10)[::2],
        "permuted_3d": torch.arange(60.0).reshape(3, 4, 5).permute(2, 0, 1)[1:],
        "expanded": torch.tensor([1.0, 2.0, 3.0]).expand(4, 3),
        "shared_whole": shared,
        "shared_row0": shared[0],
        "shared_row1": shared[1],
        "float64": torch.randn(3, 2, dtype=torch.float64, generator=generator),
        "float16": torch.tensor(special, dtype=torch.float16),
        "bfloat16": torch.tensor(special[:5] + [1e-40] + special[6:], dtype=torch.bfloat16),
        "int64": torch.tensor([0, -1, 2**40, -(2**62), 2**63 - 1]),
        "int32": torch.tensor([[-(2**31), 7], [2**31 - 1, 0]], dtype=torch.int32),
        "int16": torch.tensor([-300, 300], dtype=torch.int16),
        "int8": torch.tensor([-128, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "scalar_f32": torch.tensor(3.5),
        "scalar_i64": torch.tensor(-7),
        "empty": torch.zeros(0, 3),
        "requires_grad": torch.ones(3, requires_grad=True),
        "parameter": torch.nn.Parameter(torch.randn(2, 3, generator=generator)),
        "with_attribute": with_attribute,
        "dict_first": filled_later,
        "dict_again": filled_later,
        "untyped_storage": torch.tensor([1, 2], dtype=torch.int16).untyped_storage(),
        "raw_bytes": b"\x00\xff\x10",
        "empty_bytes": b"",
        "tuple": (1, "two", 3.0),
    }


def protocol4() -> dict:
    """Same kinds of content, pickled with protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL...)."""
    return {
        "model": tiny_hooked_transformer(seed=4).state_dict(),
        "config": hooked_transformer_config(),
        "long_text": "grokking " * 40,
        "raw_bytes": b"\x00\xff\x10",
        "nested": {"a": [1, (2, 3.5)], "b": None, "c": {"d": [True, False]}},
    }


class RunsShellCommand:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class CallsEval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('os').system('echo pwned')",))


class SpawnsProcess:
    def __reduce__(self):
        return (subprocess.Popen, (["echo", "pwned"],))


def hostile(payload) -> dict:
    return {"model": {"embed.W_E": torch.ones(2, 2)}, "payload": payload}


# ---------------------------------------------------------------- describe


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe_float(x: float) -> dict:
    # repr round-trips exactly and Rust's f64::from_str reads it, inf and nan too.
    return {"kind": "float", "repr": repr(float(x))}


def describe_tensor(tensor: torch.Tensor) -> dict:
    flat = tensor.detach().contiguous().reshape(-1)
    raw = bytes(flat.view(torch.uint8).tolist()) if flat.numel() else b""
    described = {
        "kind": "tensor",
        "dtype": dtype_name(tensor.dtype),
        "shape": list(tensor.shape),
        "requires_grad": tensor.requires_grad,
        "hex": raw.hex(),
    }
    if flat.numel() <= 16:
        if tensor.dtype.is_floating_point:
            described["values"] = [repr(float(x)) for x in flat.tolist()]
        else:
            described["values"] = [int(x) for x in flat.tolist()]
    return described


def describe_object(obj) -> dict:
    """An object as the pickle records it: class, constructor args, state."""
    reduced = obj.__reduce_ex__(2)
    func, args = reduced[0], reduced[1]
    state = reduced[2] if len(reduced) > 2 else None
    if func is copyreg.__newobj__:
        cls, args = args[0], args[1:]
    else:
        cls = func
    return {
        "kind": "object",
        "module": cls.__module__,
        "name": cls.__qualname__,
        "args": [describe(a) for a in args],
        "state": None if state is None else describe(state),
    }


def describe(obj) -> dict:
    """What the Rust reader should produce for `obj`, one Value kind per case."""
    if obj is None:
        return {"kind": "none"}
    if isinstance(obj, bool):
        return {"kind": "bool", "value": obj}
    if isinstance(obj, int):
        return {"kind": "int", "value": obj}
    if isinstance(obj, float):
        return describe_float(obj)
    if isinstance(obj, str):
        return {"kind": "str", "value": obj}
    if isinstance(obj, bytes):
        return {"kind": "bytes", "hex": obj.hex()}
    if isinstance(obj, list):
        return {"kind": "list", "items": [describe(x) for x in obj]}
    if isinstance(obj, tuple):
        return {"kind": "tuple", "items": [describe(x) for x in obj]}
    if isinstance(obj, dict):
        return {"kind": "dict", "items": [[describe(k), describe(v)] for k, v in obj.items()]}
    if isinstance(obj, torch.Tensor):
        return describe_tensor(obj)
    if isinstance(obj, torch.UntypedStorage):
        return describe_tensor(torch.tensor(list(bytes(obj)), dtype=torch.uint8))
    if isinstance(obj, torch.dtype):
        return {"kind": "global", "module": "torch", "name": dtype_name(obj)}
    return describe_object(obj)


def main() -> None:
    loadable = {
        "demo_small.pth": (demo_small(), 2),
        "demo_dataclass_config.pth": (demo_dataclass_config(), 2),
        "views.pth": (views(), 2),
        "protocol4.pth": (protocol4(), 4),
    }
    expected = {}
    for name, (obj, protocol) in loadable.items():
        torch.save(obj, OUT / name, pickle_protocol=protocol)
        expected[name] = describe(obj)
    torch.save(hostile(RunsShellCommand()), OUT / "hostile_reduce.pth")
    torch.save(hostile(CallsEval()), OUT / "hostile_eval.pth")
    torch.save(hostile(SpawnsProcess()), OUT / "hostile_popen.pth")
    torch.save({"z": torch.ones(2, dtype=torch.complex64)}, OUT / "complex.pth")
    torch.save({"w": torch.ones(2)}, OUT / "legacy.pth", _use_new_zipfile_serialization=False)
    expected["torch_version"] = torch.__version__
    (OUT / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
