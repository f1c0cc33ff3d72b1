"""The application layer: from a run configuration (YAML at the CLI edge) to data, a model, a
Trainer and a fitted model that predicts from raw tables."""

from polytask.app._config import (
    AudioConfig,
    BalancerConfig,
    BlendMember,
    DataConfig,
    FeaturesConfig,
    ImagesConfig,
    ModelConfig,
    MoleculesConfig,
    RunConfig,
    SourceConfig,
    SplitConfig,
    TextConfig,
)
from polytask.app._data import (
    PreparedData,
    feature_columns,
    load_frame,
    load_prepared,
    make_split,
    prepare,
    prepare_audio,
    prepare_images,
    prepare_sources,
    prepare_text,
)
from polytask.app._encoding import Encoding, encoding_from_dict
from polytask.app._fitted import FittedModel, fit
from polytask.app._outputs import write_predictions
from polytask.models import build_model, input_columns  # re-exported: architectures by name

__all__ = [
    "AudioConfig",
    "BalancerConfig",
    "BlendMember",
    "DataConfig",
    "Encoding",
    "FeaturesConfig",
    "FittedModel",
    "ImagesConfig",
    "ModelConfig",
    "MoleculesConfig",
    "PreparedData",
    "RunConfig",
    "SourceConfig",
    "SplitConfig",
    "TextConfig",
    "build_model",
    "encoding_from_dict",
    "feature_columns",
    "fit",
    "input_columns",
    "load_frame",
    "load_prepared",
    "make_split",
    "prepare",
    "prepare_audio",
    "prepare_images",
    "prepare_sources",
    "prepare_text",
    "write_predictions",
]
