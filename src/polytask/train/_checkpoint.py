"""Checkpoints: tensors in state dicts plus JSON metadata, loadable with weights_only=True."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from polytask._files import require_file, write_atomic
from polytask._version import __version__

FORMAT = "polytask-checkpoint"
FORMAT_VERSION = 2
"""2: every checkpoint carries a checksum (`digest`); 1 (still read): it may lack one."""
READABLE_FORMATS = (1, 2)


class CheckpointError(ValueError):
    """A file is not a polytask checkpoint, or not one this version can read."""


def _digest(tree: Any) -> str:
    """BLAKE2b of every tensor's bytes and every plain value, in order: a flipped bit
    anywhere in a checkpoint is noticed on loading."""
    h = hashlib.blake2b(digest_size=16)

    def walk(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
        elif isinstance(node, dict):
            for key, value in node.items():
                h.update(repr(key).encode())
                walk(value)
        elif isinstance(node, list | tuple):
            h.update(b"[")
            for value in node:
                walk(value)
            h.update(b"]")
        else:
            h.update(repr(node).encode())

    walk(tree)
    return h.hexdigest()


def _nbytes(tree: Any) -> int:
    """About how many bytes `torch.save` writes for `tree` (its tensors and strings)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(_nbytes(k) + _nbytes(v) for k, v in tree.items())
    if isinstance(tree, list | tuple):
        return sum(_nbytes(v) for v in tree)
    return len(tree) if isinstance(tree, str | bytes) else 8


def save_checkpoint(path: str | Path, states: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write `states` (state dicts) and `meta` (JSON-serialisable) atomically to `path`: a
    failed write (e.g. a full disk, `DiskFullError`) leaves an earlier file there intact."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "polytask_version": __version__,
        "meta_json": json.dumps(meta),
        **states,
    }
    payload["digest"] = _digest(payload)
    return write_atomic(path, lambda tmp: torch.save(payload, tmp), _nbytes(payload))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint without executing code: returns (states, meta)."""
    path = Path(path)
    inside = path / "model.pt"
    hint = f": give the model file in it, {inside}" if inside.is_file() else ""
    require_file(path, "checkpoint", CheckpointError, hint)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is refused: loading it would run code or build objects other than "
            "tensors and plain data (only files written by polytask are accepted)"
            if "weights_only" in str(err).lower() or "weights only" in str(err).lower()
            else f"{path} is damaged or not a polytask checkpoint (it does not unpickle)"
        ) from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path} is damaged or not a polytask checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120] if str(err) else 'unreadable'}); was it cut short "
            "by a full disk or an interrupted copy?"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a polytask checkpoint")
    version = payload.get("format_version")
    if version not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, this polytask ({__version__}) reads "
            f"formats {', '.join(map(str, READABLE_FORMATS))}: it is damaged, or written by "
            "another polytask version; load it with that version"
        )
    digest = payload.pop("digest", None)
    if (digest is not None or version >= 2) and digest != _digest(payload):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the checksum written with it"
        )
    meta = json.loads(payload.pop("meta_json"))
    for key in ("format", "format_version"):
        payload.pop(key)
    meta["polytask_version"] = payload.pop("polytask_version")
    return payload, meta


RESUMABLE_CHANGES = frozenset({
    "progress", "device", "num_workers", "keep_last", "keep_best", "epochs", "steps",
    "conflict_every", "affinity_every", "lookahead_lr", "degradation_window", "loggers",
    "logger_params", "accumulate", "dist_backend", "dist_timeout_s",
})  # fmt: skip
"""Training settings a resumed run may change (how long, where, how it is shown, logged, saved
or monitored: the task-relations probes never change the training); any other difference would
make it a different run."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def run_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'path: saved → current' for each setting that differs, except `RESUMABLE_CHANGES`,
    the output folder, and training settings a later polytask added that are at their
    default (a checkpoint written before they existed trained as they say)."""
    a, b = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(current)))
    added = _training_defaults()
    out = []
    for key in sorted(set(a) | set(b)):
        last = key.rsplit(".", 1)[-1]
        training = ".training." in f".{key}"
        setting = f".{key}".split(".training.", 1)[-1].split(".", 1)[0]  # e.g. logger_params
        if last == "output_dir" or (training and setting in RESUMABLE_CHANGES):
            continue
        if training and key not in a and last in added and b.get(key) == added[last]:
            continue
        if _recorded_later(key, a):
            continue  # a checkpoint from before these settings were recorded
        if a.get(key, "(unset)") != b.get(key, "(unset)"):
            out.append(f"{key}: {a.get(key, '(unset)')!r} → {b.get(key, '(unset)')!r}")
    return out


RECORDED_LATER = ("balancer_params", "task_settings", "data")
"""Run settings later polytask versions record: an earlier checkpoint lacks them."""


def _recorded_later(key: str, saved: dict[str, Any]) -> bool:
    """Whether `key` is one of `RECORDED_LATER`'s settings (or a wrapped balancer's) that the
    saved checkpoint does not record at all."""
    parts = key.split(".")
    if parts[0] not in RECORDED_LATER:
        return False
    for depth in range(1, len(parts)):
        prefix = ".".join(parts[:depth]) + "."
        if not any(k.startswith(prefix) for k in saved):
            return True
    return False


def _training_defaults() -> dict[str, Any]:
    """TrainConfig's plain default values by field name, as they appear in JSON."""
    from polytask.train._config import TrainConfig

    return {
        f.name: json.loads(json.dumps(f.default))
        for f in dataclasses.fields(TrainConfig)
        if f.default is not dataclasses.MISSING
    }


def describe_state_mismatch(error: Exception) -> str:
    """The first lines of torch's load_state_dict complaint (missing / unexpected / resized)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[1:4] if len(lines) > 1 else lines)[:600]
