"""A model that answers each task from its own snapshot: per-task model selection's result.

A task's head is only valid with the trunk it was trained alongside, so a task served from an
earlier evaluation needs the shared part as it was then, not today's. `PerTaskSnapshots` holds
one copy of the model per distinct best evaluation (a *member*) and routes each task to the
member holding its snapshot. The task-specific parameters a member does not serve are tied to
those of the member that does, so each head exists once: the cost is one copy of the shared
part per distinct best evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from torch import Tensor, nn

from polytask.models._base import MultiTaskNet


class PerTaskSnapshots(MultiTaskNet):
    """Routes each task to the member (a copy of one architecture) holding its snapshot.

    `members` are copies of the same model (same class, same tasks), each with the weights of
    one evaluation; `routes` maps every task to the index of its member. `forward(x)` runs each
    member once and takes from it the outputs of the tasks routed to it.
    """

    def __init__(self, members: Sequence[MultiTaskNet], routes: Mapping[str, int]) -> None:
        super().__init__()
        if not members:
            raise ValueError("PerTaskSnapshots needs at least one member")
        self._init_tasks(members[0].tasks)
        if set(routes) != set(self.task_names):
            raise ValueError(
                f"routes must name each task once: got {sorted(routes)}, "
                f"the tasks are {list(self.task_names)}"
            )
        unused = sorted(set(range(len(members))) - set(routes.values()))
        if unused or not all(0 <= i < len(members) for i in routes.values()):
            raise ValueError(
                f"every member must serve a task and every route name a member: routes "
                f"{dict(routes)} for {len(members)} members"
            )
        self.members = nn.ModuleList(members)
        self.routes = dict(routes)
        self._tie_unserved_task_parameters()

    @classmethod
    def like(cls, model: MultiTaskNet, routes: Mapping[str, int]) -> PerTaskSnapshots:
        """An empty frame with copies of `model` as members, to load a saved state into (the
        member count is the number of distinct routes)."""
        n = len(set(routes.values()))
        return cls([copy.deepcopy(model) for _ in range(n)], routes)

    def layout(self) -> dict[str, Any]:
        """What `like` needs to rebuild this frame (JSON-serialisable, for checkpoint metadata)."""
        return {"routes": dict(self.routes)}

    def _nets(self) -> list[MultiTaskNet]:
        return [cast(MultiTaskNet, m) for m in self.members]

    def _tie_unserved_task_parameters(self) -> None:
        """Point each member's parameters of the tasks it does not serve at the serving
        member's, so that no head is held twice (they were never read anyway)."""
        nets = self._nets()
        for index, member in enumerate(nets):
            names = {id(p): n for n, p in member.named_parameters(remove_duplicate=False)}
            shared = {id(p) for p in member.shared_parameters()}
            for task, owner_index in self.routes.items():
                if owner_index == index:
                    continue
                owner = nets[owner_index]
                for param in list(member.task_parameters(task)):
                    if id(param) in shared:
                        continue
                    name = names[id(param)]
                    path, _, attr = name.rpartition(".")
                    module = member.get_submodule(path)
                    setattr(module, attr, owner.get_parameter(name))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for index, member in enumerate(self.members):
            outputs = member(x)
            out.update({t: outputs[t] for t, i in self.routes.items() if i == index})
        return {t: out[t] for t in self.task_names}

    def _member(self, task: str) -> MultiTaskNet:
        self._check_task(task)
        return self._nets()[self.routes[task]]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        for member in self._nets():
            yield from member.shared_parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        return self._member(name).task_parameters(name)


def one_copy(model: MultiTaskNet) -> MultiTaskNet:
    """The architecture itself: one member of per-task snapshots (its size is the
    architecture's), else `model`."""
    return cast(MultiTaskNet, model.members[0]) if isinstance(model, PerTaskSnapshots) else model


def snapshot_count(model: MultiTaskNet) -> int:
    """Copies of the shared part `model` holds: its snapshots' members, else 1."""
    return len(model.members) if isinstance(model, PerTaskSnapshots) else 1
