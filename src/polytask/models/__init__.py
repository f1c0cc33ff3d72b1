"""Multi-task architectures: all keep the `MultiTaskNet` contract, and each is registered by
name in `ARCHITECTURES` with a builder whose keyword parameters are its config parameters.
Shared trunks for tabular rows and images are in `polytask.models.encoders`; give a builder an
`InputShape` (e.g. (C, H, W)) and an `encoder` for inputs that are not tabular."""

from polytask._seeding import seeded
from polytask.models._aitm import AITM
from polytask.models._base import MultiTaskNet
from polytask.models._branching import LearningToBranch
from polytask.models._ensemble import Ensemble
from polytask.models._esmm import ESMM
from polytask.models._experts import PLE, MMoE
from polytask.models._forest import Forest
from polytask.models._gp import MultiTaskGP
from polytask.models._hard_sharing import MultiTaskModel, hard_sharing_mlp
from polytask.models._low_rank import LowRank
from polytask.models._mean_regularised import MeanRegularised
from polytask.models._mlp import MLP
from polytask.models._mtan import MTAN, mtan_mlp
from polytask.models._multi_input import MultiInput, input_columns
from polytask.models._multilevel import Multilevel
from polytask.models._per_task import PerTaskSnapshots
from polytask.models._registry import ARCHITECTURES, Builder, architecture_params, build_model
from polytask.models._task_embedding import TaskEmbedding
from polytask.models._teacher import TeacherForced, teaching
from polytask.models._towers import task_tower
from polytask.models._towers_coupled import CrossStitch, SoftSharing
from polytask.models.encoders import Features, InputShape

__all__ = [
    "AITM",
    "ARCHITECTURES",
    "ESMM",
    "MLP",
    "MTAN",
    "PLE",
    "Builder",
    "CrossStitch",
    "Ensemble",
    "Features",
    "Forest",
    "InputShape",
    "LearningToBranch",
    "LowRank",
    "MMoE",
    "MeanRegularised",
    "MultiInput",
    "MultiTaskGP",
    "MultiTaskModel",
    "MultiTaskNet",
    "Multilevel",
    "PerTaskSnapshots",
    "SoftSharing",
    "TaskEmbedding",
    "TeacherForced",
    "architecture_params",
    "build_model",
    "hard_sharing_mlp",
    "input_columns",
    "mtan_mlp",
    "seeded",
    "task_tower",
    "teaching",
]
