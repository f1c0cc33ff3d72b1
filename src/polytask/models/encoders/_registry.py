"""Encoders by name. Adding one: its file (the module and a builder function) and one line in
`ENCODERS`; the builder's keyword parameters are what `encoder_params` may set."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator

from polytask._params import check_params, lookup, signature_params
from polytask.models.encoders._audio import build_audio
from polytask.models.encoders._base import Encoder, InputShape
from polytask.models.encoders._cnn import build_cnn
from polytask.models.encoders._hf import build_hf
from polytask.models.encoders._mlp import build_mlp
from polytask.models.encoders._molecule import build_molecule
from polytask.models.encoders._resnet_fpn import build_resnet_fpn
from polytask.models.encoders._timm import build_timm
from polytask.models.encoders._transformer import build_transformer
from polytask.models.encoders._vit import build_vit

EncoderBuilder = Callable[..., Encoder]
"""`builder(input_shape, **params)`: the encoder for rows of `input_shape` (e.g. (C, H, W)).
Its keyword parameters, with defaults and constraints in its signature, are what a config's
`encoder_params` may set; `build_encoder` validates them first."""

ENCODERS: dict[str, EncoderBuilder] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "resnet_fpn": build_resnet_fpn,
    "vit": build_vit,
    "timm": build_timm,
    "transformer": build_transformer,
    "hf": build_hf,
    "audio": build_audio,
    "molecule": build_molecule,
}

_GIVEN = 1  # the input shape comes from the data


def encoder_params(name: str) -> dict[str, inspect.Parameter]:
    """The parameters a config may set for encoder `name` (its builder's keyword parameters)."""
    return signature_params(lookup("encoder", name, ENCODERS), _GIVEN)


def check_encoder(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of encoder `name`'s builder, validated from `params` (defaults where not
    given); a ValueError names the unknown encoder or the bad parameter and lists them all."""
    return check_params("encoder", name, lookup("encoder", name, ENCODERS), params, _GIVEN)


def build_encoder(name: str, input_shape: Sequence[int] | InputShape, **params: Any) -> Encoder:
    """The encoder `name` (see `ENCODERS`) for rows of `input_shape` (an `InputShape` reaches
    the builder as it is, with its vocabulary size or sample rate), with `params` validated
    against its builder's signature first: a ValueError names an unknown encoder or parameter,
    or a bad value, and lists the encoder's parameters."""
    checked = check_encoder(name, params)
    shape = input_shape if isinstance(input_shape, InputShape) else tuple(input_shape)
    return ENCODERS[name](shape, **checked)


def _known(name: str) -> str:
    lookup("encoder", name, ENCODERS)
    return name


EncoderName = Annotated[str, AfterValidator(_known)]
"""A registered encoder's name (an architecture builder's `encoder` parameter)."""
EncoderParams = dict[str, Any]
"""An encoder's parameters by name (an architecture builder's `encoder_params`)."""


def input_shape_of(features: Sequence[str] | InputShape) -> tuple[int, ...]:
    """One row's shape: (F,) for F tabular feature names, else the InputShape's."""
    return features.shape if isinstance(features, InputShape) else (len(features),)


def shared_encoder(
    features: Sequence[str] | InputShape,
    encoder: str,
    encoder_params: Mapping[str, Any] | None,
    hidden: Sequence[int],
    dropout: float,
) -> Encoder:
    """An architecture's shared encoder: `encoder` built with `encoder_params` for the input
    `features` describe; the `mlp` encoder takes the architecture's `hidden` and `dropout`
    unless `encoder_params` sets them."""
    params = dict(encoder_params or {})
    if encoder == "mlp":
        params = {"hidden": hidden, "dropout": dropout, **params}
    shape = features if isinstance(features, InputShape) else input_shape_of(features)
    return build_encoder(encoder, shape, **params)
