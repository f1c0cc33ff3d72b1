"""Encoders: shared trunks for one input modality (tabular rows, images, text, audio,
molecules), each registered by name in `ENCODERS` with a builder whose keyword parameters are
its config parameters. An encoder declares its output as `Features` (a vector, a feature map
with its stride, or a padded sequence with its mask)."""

from polytask.models.encoders._audio import AudioEncoder, LogMel
from polytask.models.encoders._base import (
    Encoder,
    Features,
    InputShape,
    MaskedPool,
    join_mask,
    split_mask,
)
from polytask.models.encoders._cnn import CNNEncoder
from polytask.models.encoders._hf import HFEncoder
from polytask.models.encoders._mlp import MLPEncoder
from polytask.models.encoders._molecule import MoleculeEncoder
from polytask.models.encoders._registry import (
    ENCODERS,
    EncoderBuilder,
    build_encoder,
    encoder_params,
)
from polytask.models.encoders._resnet_fpn import FeaturePyramid, ResNetFPN
from polytask.models.encoders._timm import TimmEncoder
from polytask.models.encoders._transformer import TransformerEncoder
from polytask.models.encoders._vit import ViTEncoder

__all__ = [
    "ENCODERS",
    "AudioEncoder",
    "CNNEncoder",
    "Encoder",
    "EncoderBuilder",
    "FeaturePyramid",
    "Features",
    "HFEncoder",
    "InputShape",
    "LogMel",
    "MLPEncoder",
    "MaskedPool",
    "MoleculeEncoder",
    "ResNetFPN",
    "TimmEncoder",
    "TransformerEncoder",
    "ViTEncoder",
    "build_encoder",
    "encoder_params",
    "join_mask",
    "split_mask",
]
