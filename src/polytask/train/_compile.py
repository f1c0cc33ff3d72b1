"""`TrainConfig.compile`: the model's forward pieces compiled in place with `torch.compile`.

Each direct part of the model (the trunk, each head, each expert, ...) is compiled in place: its
`forward` becomes its class's compiled `forward` bound to it (one compiled function per class,
so parts of one class share their compiled code, and a deep copy stays bound to the copy;
`nn.Module.compile` would leave torch's own modules, e.g. a `nn.Linear` head or a
`nn.Sequential` trunk, uncompiled). The model keeps its class, its parameters' names and the
methods the gradient modes call (`representation`, `heads_forward`, `trunk_blocks`).
Compiled modules support ordinary backwards, not the vmapped batched backward
(`is_grads_batched`) that some gradient modes take through the model's graph: those are
refused before training, naming the modes that work. Modes that run the trunk block by block
(the Gramian and sketch modes, or an exact mode walking a linear trunk by hand) train with
compiled heads only.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from polytask.balancers._base import Balancer
from polytask.gradients._plan import GradientPlan
from polytask.gradients._registry import MODES, make_mode
from polytask.models._base import MultiTaskNet


def compile_model(model: MultiTaskNet, balancer: Balancer, plan: GradientPlan) -> str:
    """Compile `model`'s parts in place for `plan`, or raise a ValueError naming the gradient
    mode that cannot use compiled modules and what to use instead; returns what was compiled
    (for the log)."""
    method = plan.method
    if not (method.compiles or plan.walk):
        why = ""
        if method.can_walk and model.shared_representation and model.trunk_blocks():
            why = (
                f" ({method.name!r} avoids it only by walking a trunk of linear layers and "
                "elementwise activations without dropout by hand)"
            )
        usable = compilable_modes(model, balancer)
        instead = (
            f"set training.gradient_mode to {' or '.join(repr(m) for m in usable)}, or "
            if usable
            else ""
        )
        raise ValueError(
            f"compile: gradient mode {method.name!r} takes the task gradients in a vmapped "
            f"batched backward through the model, which torch.compile'd modules do not "
            f"support{why}: {instead}train without compile (training.compile: false)"
        )
    parts = compile_parts(model)
    text = f"compile: {', '.join(parts)} compiled in place (torch.compile)"
    if plan.walk or method.needs_segments:
        text += (
            f"; the {method.name} mode runs the trunk block by block, so training steps use "
            "its compiled heads only (evaluation the whole compiled model)"
        )
    return text + "; the first steps are slow while it compiles"


def compile_parts(model: nn.Module) -> list[str]:
    """Compile each direct part of `model` in place (each member of a ModuleDict or
    ModuleList); returns their names."""
    names = []
    for name, child in model.named_children():
        members = (
            list(child.named_children())
            if isinstance(child, nn.ModuleDict | nn.ModuleList)
            else [("", child)]
        )
        for key, module in members:
            if any(True for _ in module.parameters()):
                module.forward = types.MethodType(_compiled_forward(type(module)), module)
                names.append(f"{name}[{key}]" if key else name)
    return names


def is_compiled(module: nn.Module) -> bool:
    """Whether `compile_parts` compiled `module` in place."""
    forward = vars(module).get("forward")
    return isinstance(forward, types.MethodType) and any(
        forward.__func__ is f for f in _COMPILED.values()
    )


_COMPILED: dict[type[nn.Module], Callable[..., Any]] = {}


def _compiled_forward(cls: type[nn.Module]) -> Callable[..., Any]:
    """`cls.forward` compiled (once per class and process)."""
    if cls not in _COMPILED:
        _COMPILED[cls] = torch.compile(cls.forward)
    return _COMPILED[cls]


def compilable_modes(model: MultiTaskNet, balancer: Balancer) -> list[str]:
    """The gradient modes that can serve `balancer` on `model` with compiled modules."""
    usable = []
    for name, cls in MODES.items():
        if not cls.compiles or cls.refusal(balancer) is not None:
            continue
        try:
            make_mode(name).check_model(model)
        except ValueError:
            continue
        usable.append(name)
    return usable
