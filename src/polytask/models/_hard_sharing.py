"""Hard parameter sharing: one shared trunk (an encoder: an MLP for tabular rows, a conv net or
a transformer for images), one head per task."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

from torch import Tensor, nn

from polytask._seeding import seeded
from polytask._validation import checked
from polytask.models._base import MultiTaskNet
from polytask.models._hints import LayerSizes, Rate, TaskRates, TowerSizes
from polytask.models._mlp import MLP
from polytask.models._towers import task_towers
from polytask.models.encoders._base import Encoder, Features, InputShape
from polytask.models.encoders._registry import EncoderName, EncoderParams, shared_encoder
from polytask.tasks._task import Task


class MultiTaskModel(MultiTaskNet):
    """A shared trunk feeding one head per task; `forward` returns `{task_name: output}`.

    `representation(x)` / `heads_forward(z)` expose the shared representation, so that
    balancing can also work on gradients with respect to it. `features` describes it (the
    trunk's own `Features` when it is an `Encoder`, else a vector of its `out_dim`); on a
    feature map each task's head comes from its kind (`Task.build_head(features)`), and `tower`
    does not apply.
    """

    shared_representation: ClassVar[bool] = True

    @checked
    def __init__(
        self,
        trunk: nn.Module,
        tasks: Sequence[Task],
        trunk_out_dim: int | None = None,
        tower: Sequence[int] = (),
        tower_dropout: float = 0.0,
        task_dropout: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self._init_tasks(tasks)
        dim = trunk_out_dim if trunk_out_dim is not None else getattr(trunk, "out_dim", None)
        if not isinstance(dim, int):
            raise ValueError(
                "cannot tell the trunk's output size: give the trunk an `out_dim` attribute "
                "or pass trunk_out_dim="
            )
        self.trunk = trunk
        declared = getattr(trunk, "features", None)
        self.features = declared if isinstance(declared, Features) else Features(dim)
        if self.features.per_position:
            if tower or task_dropout:
                raise ValueError(
                    f"tower and task_dropout apply to a trunk that outputs vectors; this trunk "
                    f"outputs a value per position ({self.features}): remove them (each task's "
                    "head comes from its task kind)"
                )
            self.heads = nn.ModuleDict({t.name: t.build_head(self.features) for t in tasks})
            self.representation_dim = (
                trunk.output_numel() if isinstance(trunk, Encoder) else self.features.channels
            )
            return
        if tower and min(tower) < 1:
            raise ValueError(f"tower must list positive layer sizes, got {list(tower)}")
        self.heads = task_towers(dim, tower, tasks, tower_dropout, task_dropout)
        self.representation_dim = dim

    def representation(self, x: Tensor) -> Tensor:
        """The shared representation all heads read."""
        out: Tensor = self.trunk(x)
        return out

    def heads_forward(self, z: Tensor | Sequence[Tensor]) -> dict[str, Tensor]:
        """Each head on z, or on its own tensor when given one per task (in task order)."""
        inputs = [z] * len(self.tasks) if isinstance(z, Tensor) else list(z)
        return {
            t.name: t.shape_output(self.heads[t.name](zi))
            for t, zi in zip(self.tasks, inputs, strict=True)
        }

    def head_entry_layers(self) -> list[nn.Linear] | None:
        """Each head's first layer (task order) when every head starts with an nn.Linear: the
        engine then keeps the per-task representation gradients factored (cheap for many tasks)."""
        entries = [_entry(self.heads[name]) for name in self.task_names]
        return None if any(e is None for e in entries) else entries  # type: ignore[return-value]

    def heads_forward_from_entries(self, entries: Sequence[Tensor]) -> dict[str, Tensor]:
        """The heads after their first layer, on its outputs (see `head_entry_layers`)."""
        outputs = {}
        for t, u in zip(self.tasks, entries, strict=True):
            head = self.heads[t.name]
            for layer in list(head)[1:] if isinstance(head, nn.Sequential) else ():
                u = layer(u)
            outputs[t.name] = t.shape_output(u)
        return outputs

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.heads_forward(self.representation(x))

    def trunk_blocks(self) -> list[nn.Module] | None:
        """The trunk as an ordered list of blocks (for the lean Gramian path and the walk),
        if it is one: an nn.Sequential, or polytask's own trunk whose forward is its `net`;
        None when a parameter sits in two blocks (a layer applied twice: per-block Gramians
        would drop the cross terms) or outside them (the blocks would not be the trunk)."""
        trunk, blocks = self.trunk, None
        if isinstance(trunk, nn.Sequential):
            blocks = list(trunk)
        net = getattr(trunk, "net", None)
        forward = getattr(type(trunk).forward, "__module__", "") or ""
        if blocks is None and isinstance(net, nn.Sequential) and forward.startswith("polytask."):
            blocks = list(net)
        if blocks is None:
            return None
        seen = [id(p) for b in blocks for p in set(b.parameters())]
        if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in trunk.parameters()}:
            return None
        return blocks

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        self._check_task(name)
        return self.heads[name].parameters()


def _entry(head: nn.Module) -> nn.Linear | None:
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[0], nn.Linear):
        return head[0]
    return None


@checked
def hard_sharing_mlp(
    in_dim: int,
    tasks: Sequence[Task],
    hidden: Sequence[int] = (128, 128),
    dropout: float = 0.0,
    tower: Sequence[int] = (),
    task_dropout: Mapping[str, float] | None = None,
    seed: int | None = None,
) -> MultiTaskModel:
    """The default model: an MLP trunk shared by all tasks, and per task a linear head (or a
    tower of `tower` hidden sizes ending in one); `task_dropout` gives tasks their own rate.
    `seed` draws the initial weights reproducibly (else from torch's global generator)."""
    with seeded(seed):
        trunk = MLP(in_dim, hidden, dropout)
        return MultiTaskModel(
            trunk, tasks, tower=tower, tower_dropout=dropout, task_dropout=task_dropout
        )


def build_hard_sharing(
    features: Sequence[str] | InputShape,
    tasks: Sequence[Task],
    /,
    *,
    hidden: LayerSizes = (128, 128),
    dropout: Rate = 0.0,
    tower: TowerSizes = (),
    task_dropout: TaskRates | None = None,
    encoder: EncoderName = "mlp",
    encoder_params: EncoderParams | None = None,
) -> MultiTaskModel:
    """`hard_sharing`: one shared `encoder` (default an MLP of `hidden` sizes; for images an
    InputShape and e.g. `cnn` with its `encoder_params`), and per task a linear head or a
    `tower` of hidden sizes; `task_dropout` gives tasks their own rate (e.g. {ltv: 0.3})."""
    trunk = shared_encoder(features, encoder, encoder_params, hidden, dropout)
    return MultiTaskModel(
        trunk, tasks, tower=tower, tower_dropout=dropout, task_dropout=task_dropout
    )
