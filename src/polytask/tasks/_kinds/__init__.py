"""Task kinds: the `TaskKind` base class and one module per built-in kind."""

from polytask.tasks._kinds._base import (
    BOS_ID,
    EOS_ID,
    IGNORE_INDEX,
    PAD_ID,
    UNK_ID,
    Derived,
    Scale,
    TargetFit,
    TaskKind,
    TextRow,
)
from polytask.tasks._kinds._binary import BinaryKind
from polytask.tasks._kinds._contrastive import ContrastiveKind
from polytask.tasks._kinds._ctc import CTCKind
from polytask.tasks._kinds._denoising import DenoisingKind
from polytask.tasks._kinds._dense_regression import DenseRegressionKind
from polytask.tasks._kinds._detection import DetectionKind
from polytask.tasks._kinds._keypoints import KeypointsKind
from polytask.tasks._kinds._multiclass import MulticlassKind
from polytask.tasks._kinds._multilabel import MultilabelKind
from polytask.tasks._kinds._normals import NormalsKind
from polytask.tasks._kinds._reconstruction import ReconstructionKind
from polytask.tasks._kinds._regression import RegressionKind
from polytask.tasks._kinds._segmentation import SegmentationKind
from polytask.tasks._kinds._self_supervised import SelfSupervisedKind, every_row
from polytask.tasks._kinds._seq2seq import Seq2SeqKind
from polytask.tasks._kinds._sequence import SequenceKind
from polytask.tasks._kinds._token import TokenKind

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "IGNORE_INDEX",
    "PAD_ID",
    "UNK_ID",
    "BinaryKind",
    "CTCKind",
    "ContrastiveKind",
    "DenoisingKind",
    "DenseRegressionKind",
    "Derived",
    "DetectionKind",
    "KeypointsKind",
    "MulticlassKind",
    "MultilabelKind",
    "NormalsKind",
    "ReconstructionKind",
    "RegressionKind",
    "Scale",
    "SegmentationKind",
    "SelfSupervisedKind",
    "Seq2SeqKind",
    "SequenceKind",
    "TargetFit",
    "TaskKind",
    "TextRow",
    "TokenKind",
    "every_row",
]
