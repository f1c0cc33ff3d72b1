"""Architectures by name. Adding one: its file (the model and a builder function) and one line
in `ARCHITECTURES`; the builder's keyword parameters are the YAML `model:` parameters."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polytask._params import check_params, lookup, signature_params
from polytask._seeding import seeded
from polytask.models._aitm import build_aitm
from polytask.models._base import MultiTaskNet
from polytask.models._branching import build_ltb
from polytask.models._esmm import build_esmm
from polytask.models._experts import build_cgc, build_mmoe, build_ple
from polytask.models._forest import build_forest
from polytask.models._gp import build_gp
from polytask.models._hard_sharing import build_hard_sharing
from polytask.models._low_rank import build_low_rank
from polytask.models._mean_regularised import build_mean_regularised
from polytask.models._mtan import build_mtan
from polytask.models._multi_input import build_multi_input
from polytask.models._multilevel import build_multilevel
from polytask.models._task_embedding import build_task_embedding
from polytask.models._towers_coupled import build_cross_stitch, build_soft_sharing
from polytask.models.encoders._base import InputShape
from polytask.tasks._task import Task

Builder = Callable[..., MultiTaskNet]
"""`builder(features, tasks, **params)`: the model for the encoded input columns' names (or,
for a builder with an `encoder` parameter, an `InputShape` such as (C, H, W)) and the tasks.
Its keyword parameters, with defaults and constraints (e.g. `Annotated[int, Field(ge=1)]`)
in its signature, are what a config may set; `build_model` validates them first."""

ARCHITECTURES: dict[str, Builder] = {
    "hard_sharing": build_hard_sharing,
    "mmoe": build_mmoe,
    "cgc": build_cgc,
    "ple": build_ple,
    "mtan": build_mtan,
    "ltb": build_ltb,
    "cross_stitch": build_cross_stitch,
    "soft_sharing": build_soft_sharing,
    "mean_regularised": build_mean_regularised,
    "multilevel": build_multilevel,
    "esmm": build_esmm,
    "aitm": build_aitm,
    "multi_input": build_multi_input,
    "low_rank": build_low_rank,
    "task_embedding": build_task_embedding,
    "forest": build_forest,
    "gp": build_gp,
}

_GIVEN = 2  # the builder's features and tasks come from the data, not from the config


def architecture_params(architecture: str) -> dict[str, inspect.Parameter]:
    """The parameters a config may set for `architecture` (its builder's keyword parameters)."""
    return signature_params(lookup("architecture", architecture, ARCHITECTURES), _GIVEN)


def is_grown(architecture: str) -> bool:
    """Whether `architecture` builds a model fitted whole by its first refit (a forest: see
    `MultiTaskNet.grown`), read from its builder's return type."""
    builder = lookup("architecture", architecture, ARCHITECTURES)
    try:
        made = typing.get_type_hints(builder).get("return")
    except NameError:  # an annotation only a type checker resolves: not a grown model's
        return False
    return bool(getattr(made, "grown", False))


def check_architecture(architecture: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of `architecture`'s builder, validated from `params` (defaults where not
    given); a ValueError names the unknown architecture or the bad parameter and the fix."""
    builder = lookup("architecture", architecture, ARCHITECTURES)

    def elsewhere(key: str) -> str | None:
        users = [a for a, b in ARCHITECTURES.items() if key in signature_params(b, _GIVEN)]
        if not users:
            return None
        return (
            f"{key} applies to architecture {' / '.join(users)}, not {architecture!r}: "
            "remove it or change the architecture"
        )

    return check_params("architecture", architecture, builder, params, _GIVEN, elsewhere)


def image_architectures() -> list[str]:
    """The architectures that take an `InputShape` (their builders have an `encoder`)."""
    return [a for a, b in ARCHITECTURES.items() if "encoder" in signature_params(b, _GIVEN)]


def build_model(
    architecture: str,
    features: int | Sequence[str] | InputShape,
    tasks: Sequence[Task],
    *,
    seed: int | None = None,
    **params: Any,
) -> MultiTaskNet:
    """The `architecture` (see `ARCHITECTURES`) for inputs of `features` encoded columns (their
    names, as `TabularPreprocessor.feature_names` gives them, or their count: x0, x1, ...; or an
    `InputShape` for other inputs, e.g. images, which architectures with an encoder take), with
    its `params` validated against its builder's signature first; `seed` draws the initial
    weights reproducibly without touching torch's global generator."""
    given: Sequence[str] | InputShape
    if isinstance(features, InputShape):
        lookup("architecture", architecture, ARCHITECTURES)
        if architecture not in image_architectures():
            raise ValueError(
                f"architecture {architecture!r} takes tabular rows only, not inputs of shape "
                f"{features.shape}: use architecture {' or '.join(image_architectures())} with "
                "an encoder (model: {encoder: cnn, encoder_params: {...}})"
            )
        given = features
    elif isinstance(features, int):
        given = [f"x{i}" for i in range(features)]
    else:
        given = list(features)
    checked = check_architecture(architecture, params)
    with seeded(seed):
        return ARCHITECTURES[architecture](given, tasks, **checked)
