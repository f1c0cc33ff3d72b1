"""Balancers by name. Adding a method: one file and one line in `BALANCERS`."""

from __future__ import annotations

import inspect
from typing import Any

from polytask._params import check_params, lookup, signature_params
from polytask.balancers._aligned_mtl import AlignedMTL
from polytask.balancers._auto_lambda import AutoLambda
from polytask.balancers._base import Balancer
from polytask.balancers._cagrad import CAGrad
from polytask.balancers._conflict_free import ConFIG
from polytask.balancers._db_mtl import DBMTL
from polytask.balancers._dualproj import DualProj
from polytask.balancers._dwa import DynamicWeightAverage
from polytask.balancers._equal import EqualWeights, MeanWeights
from polytask.balancers._excess_mtl import ExcessMTL
from polytask.balancers._fairgrad import FairGrad
from polytask.balancers._famo import FAMO
from polytask.balancers._fixed import FixedWeights
from polytask.balancers._forum import FORUM
from polytask.balancers._gls import GeometricLoss
from polytask.balancers._graddrop import GradDrop
from polytask.balancers._gradnorm import GradNorm
from polytask.balancers._gradvac import GradVac
from polytask.balancers._imtl import IMTL
from polytask.balancers._imtl_g import IMTLG
from polytask.balancers._imtl_l import ImpartialLoss
from polytask.balancers._krum import Krum
from polytask.balancers._metabalance import MetaBalance
from polytask.balancers._mgda import MGDA, MGDAUpperBound
from polytask.balancers._moco import MoCo
from polytask.balancers._modo import MoDo
from polytask.balancers._moml import MOML
from polytask.balancers._nash_mtl import NashMTL
from polytask.balancers._pcgrad import PCGrad
from polytask.balancers._rgw import RandomGradientWeighting
from polytask.balancers._rlw import RandomLossWeighting
from polytask.balancers._sdmgrad import SDMGrad
from polytask.balancers._stch import SmoothTchebycheff
from polytask.balancers._trimmed_mean import TrimmedMean
from polytask.balancers._uncertainty import UncertaintyWeighting
from polytask.balancers._upgrad import UPGrad

BALANCERS: dict[str, type[Balancer]] = {
    # loss weighting
    "ew": EqualWeights,
    "sum": EqualWeights,
    "mean": MeanWeights,
    "fixed": FixedWeights,
    "rlw": RandomLossWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "gls": GeometricLoss,
    "stch": SmoothTchebycheff,
    "imtl_l": ImpartialLoss,
    "famo": FAMO,
    # gradient methods on the Gramian
    "mgda": MGDA,
    "mgda_ub": MGDAUpperBound,
    "pcgrad": PCGrad,
    "gradvac": GradVac,
    "cagrad": CAGrad,
    "imtl_g": IMTLG,
    "imtl": IMTL,
    "rgw": RandomGradientWeighting,
    "nash_mtl": NashMTL,
    "fairgrad": FairGrad,
    "aligned_mtl": AlignedMTL,
    "upgrad": UPGrad,
    "dualproj": DualProj,
    "config": ConFIG,
    "sdmgrad": SDMGrad,
    "modo": MoDo,
    "metabalance": MetaBalance,
    "krum": Krum,
    "gradnorm": GradNorm,
    # gradient methods on the Jacobian itself
    "graddrop": GradDrop,
    "trimmed_mean": TrimmedMean,
    "moco": MoCo,
    "excess_mtl": ExcessMTL,
    "db_mtl": DBMTL,
    # bilevel: need a validation batch
    "auto_lambda": AutoLambda,
    "moml": MOML,
    "forum": FORUM,
}


def balancer_params(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters a balancer accepts."""
    return signature_params(BALANCERS[name])


def make_balancer(name: str, **params: Any) -> Balancer:
    """Build a balancer by name, validating its parameters with a message that names the fix."""
    cls = lookup("balancer", name, BALANCERS)
    return cls(**check_params("balancer", name, cls, params))


def balancer_class(name: str) -> type[Balancer]:
    """The balancer class registered under `name` (a clear error naming the choices if none)."""
    return lookup("balancer", name, BALANCERS)
