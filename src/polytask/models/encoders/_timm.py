"""Encoder `timm` (optional extra): any `timm` model's last feature map, when the timm package
is installed; polytask itself never needs it. Weights start random (no downloads)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from polytask.models.encoders._base import Encoder, Features, check_image, image_shape


def _timm() -> Any:
    """The timm module, or a ValueError saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ValueError(
            "encoder 'timm' needs the timm package, which is not installed: pip install timm "
            "(or use encoder cnn, resnet_fpn or vit, which need nothing extra)"
        ) from None


class TimmEncoder(Encoder):
    """`timm.create_model(model_name, features_only=True, out_indices=(-1,))`: its deepest
    feature map, with channels and stride from the model's `feature_info`."""

    def __init__(self, input_shape: Sequence[int], model_name: str) -> None:
        super().__init__()
        c, _, _ = image_shape("timm", input_shape)
        timm = _timm()
        self.model: nn.Module = timm.create_model(
            model_name, pretrained=False, features_only=True, out_indices=(-1,), in_chans=c
        )
        info = self.model.feature_info
        channels, stride = int(info.channels()[-1]), int(info.reduction()[-1])
        self.model_name = model_name
        self._declare(input_shape, Features(channels, stride, spatial=True))

    def forward(self, x: Tensor) -> Tensor:
        check_image("timm", x, self.input_shape[0])
        maps = self.model(x)
        out: Tensor = maps[-1]
        return out


def build_timm(input_shape: tuple[int, ...], /, *, model_name: str = "resnet18") -> TimmEncoder:
    """`timm`: the timm model `model_name` (e.g. resnet18, convnext_atto, efficientnet_b0) as
    a feature extractor, randomly initialised; needs `pip install timm`."""
    image_shape("timm", input_shape)
    return TimmEncoder(input_shape, model_name)
