"""YAML → `RunConfig`, with one clear message per problem instead of a traceback."""

from __future__ import annotations

import dataclasses
import difflib
import io
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from polytask._files import require_file
from polytask.app import RunConfig
from polytask.app._config import DataConfig, split_column_refusal


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


def _without_none(annotation: Any) -> Any:
    """`X` for `X | None`."""
    while typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _type_at(loc: tuple[int | str, ...], root: Any = RunConfig) -> Any:
    """The type of the config field at `loc` (from `root`), to list the fields allowed there."""
    current: Any = root
    for part in loc:
        current = _without_none(current)
        if isinstance(part, int) and typing.get_origin(current) is tuple:
            current = typing.get_args(current)[0]
        elif dataclasses.is_dataclass(current) and isinstance(part, str):
            hints = typing.get_type_hints(current)
            if part not in hints:
                return current
            current = hints[part]
        else:
            return None
    return _without_none(current)  # e.g. data.features: FeaturesConfig | None


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _unknown_field(loc: tuple[int | str, ...], root: Any) -> str:
    """'where: unknown field (did you mean ...?); allowed here: ...'."""
    parent = _type_at(loc[:-1], root) if root is not None else None
    if not dataclasses.is_dataclass(parent):  # not a config section: nothing to list
        return f"{_where(loc)}: unknown field"
    allowed = [f.name for f in dataclasses.fields(parent)]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if loc else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if loc[-1] == "from_column" and loc[0] == "tasks":  # in a list of tasks, not as the whole
        hint = (" (from_column makes the whole `tasks:` mapping, one task per value; beside "
                "other tasks, give each of its tasks with `where: {COLUMN: VALUE}`)")  # fmt: skip
    return f"{_where(loc)}: unknown field{hint}; allowed here: {', '.join(allowed)}"


def _tuple_size(loc: tuple[int | str, ...], root: Any) -> int | None:
    """How many values the fixed-size list (tuple) setting at `loc` takes; None otherwise."""
    args = typing.get_args(_type_at(loc, root)) if root is not None else ()
    return len(args) if args and Ellipsis not in args else None


def _mapping_expected(loc: tuple[int | str, ...], root: Any, given: Any) -> str:
    """'where: a mapping of settings, name: value (e.g. ...); its settings: ...; got a list'
    for a config section given as a list, text or number."""
    section = _type_at(loc, root) if root is not None else None
    fields = (
        [f.name for f in dataclasses.fields(section)] if dataclasses.is_dataclass(section) else []
    )
    allowed = f"; its settings: {', '.join(fields)}" if fields else ""
    got = type(given).__name__ if given is not None else "nothing"
    got = {"list": "a list", "str": f"the text {given!r}", "int": f"the number {given!r}",
           "float": f"the number {given!r}"}.get(got, got)  # fmt: skip
    example = f" (e.g. {loc[-1]}: {{{fields[0]}: ...}})" if fields and loc else ""
    return f"{_where(loc)}: a mapping of settings, name: value{example}{allowed}; got {got}"


_MEMBER = re.compile(r"literal\[.*\]|[A-Z]\w*|str|int|float|bool|none|(list|tuple|dict|set)\[.*\]")
"""How pydantic names the member of a union in an error's location."""


def _union_members(errors: list[Any]) -> list[Any]:
    """Pydantic reports a value that fits no member of a union once per member, the member
    named in the location (`tokenizer.literal['bpe', ...]`, `tokenizer.TokenizerFile.path`):
    keep the member the value's kind points to (text: the choices, with the mapping as one
    more; a mapping: its fields), the member's name left out of the location."""

    def member_at(loc: tuple[Any, ...]) -> int | None:
        return next((i for i, x in enumerate(loc) if i and isinstance(x, str)
                     and _MEMBER.fullmatch(x)), None)  # fmt: skip

    found: dict[tuple[Any, ...], dict[str, list[Any]]] = {}
    for e in errors:
        if (at := member_at(e["loc"])) is not None:
            found.setdefault(tuple(e["loc"][:at]), {}).setdefault(e["loc"][at], []).append(e)
    out = []
    for e in errors:
        at = member_at(e["loc"])
        members = found.get(tuple(e["loc"][:at])) if at is not None else None
        if at is None or members is None or len(members) < 2:
            out.append(e)
            continue
        choices = next((v for k, v in members.items() if k.startswith("literal[")), None)
        given = choices[0].get("input") if choices else None
        mine = e["loc"][at]
        if isinstance(given, str):
            if not mine.startswith("literal["):
                continue
            mapped = any(k[:1].isupper() for k in members)
            e = {**e, "msg": e["msg"] + (", or a mapping of settings" if mapped else "")}
        elif isinstance(given, dict) and mine.startswith("literal["):
            continue
        out.append({**e, "loc": (*e["loc"][:at], *e["loc"][at + 1 :])})
    return out


def format_validation_error(err: ValidationError, root: Any = RunConfig) -> str:
    """One line per problem, 'where: what' (pydantic's types and links left out); `root`: the
    config class the locations start from (None: unknown, e.g. a setting built in code)."""
    lines = []
    for e in _union_members(err.errors()):
        loc = tuple(x for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "tuple_type":  # YAML has lists, not tuples
            msg = "Input should be a list, e.g. [a, b]"
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            lines.append(_unknown_field(loc, root))
            continue
        given = e.get("input")
        short = e["type"] == "missing" and loc and isinstance(loc[-1], int)
        if (short or e["type"] == "too_long") and isinstance(given, list):  # e.g. size: [32]
            at = loc[:-1] if short else loc
            size = _tuple_size(at, root)
            most = e.get("ctx", {}).get("max_length")
            wanted = f"{size} values" if size else f"at most {most} values" if most else "more"
            lines.append(f"{_where(at)}: a list of {wanted}, got {len(given)} ({given})")
            continue
        if e["type"] == "missing_keyword_argument" or e["type"] == "missing":
            lines.append(f"{_where(loc)}: required field is missing")
            continue
        if e["type"] == "dataclass_type":  # e.g. augment: [hflip] for augment: {hflip: 0.5}
            lines.append(_mapping_expected(loc, root, e.get("input")))
            continue
        shown = e.get("input")
        got = f" (got {shown!r})" if isinstance(shown, str | int | float | bool) else ""
        lines.append(f"{_where(loc)}: {msg}{got}" if loc else f"{msg}{got}")
    return "\n".join(dict.fromkeys(lines))


def parse_config(raw: Any, base: Path | None = None) -> RunConfig:
    """Validate a mapping (e.g. parsed YAML) into a `RunConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(
            "the config must be a mapping with data, tasks, model, balancer and training"
        )
    data = raw.get("data")
    if isinstance(data, dict):
        splits = [("data.split", data.get("split"))] + [
            (f"data.sources[{i}].split", s.get("split"))
            for i, s in enumerate(data.get("sources") or [])
            if isinstance(s, dict)
        ]
        for where, split in splits:  # a split file's test_idx rows are the test rows
            if isinstance(split, dict) and split.get("file") and "test_fraction" in split:
                raise ConfigError(
                    f"{where}.test_fraction {split['test_fraction']} would not be used: the "
                    f"split file's test_idx rows are the test rows; leave test_fraction out"
                )
    if isinstance(data, dict) and isinstance(data.get("split"), dict):
        for what in ("images", "text", "audio"):  # a split column names every row's part
            part = data.get(what)
            given = sorted(k for k in data["split"] if k != "file")
            if isinstance(part, dict) and part.get("split_column") is not None and given:
                column = f"data.{what}.split_column"
                raise ConfigError(split_column_refusal(column, "data.split", given))
    column_tasks = isinstance(raw.get("tasks"), dict) and isinstance(raw.get("data"), dict)
    if column_tasks and base is not None:
        # tasks made from a column read the data when the config is made: its paths first
        try:
            data = TypeAdapter(DataConfig).validate_python(raw["data"])
        except ValidationError as err:
            said = format_validation_error(err, DataConfig).splitlines()
            raise ConfigError("\n".join(f"data.{line}" for line in said)) from None
        raw = {**raw, "data": data.with_paths_from(base)}
    try:
        config = TypeAdapter(RunConfig).validate_python(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    return config.with_paths_from(base) if base is not None else config


def default_output(config: Path) -> str:
    """A config's run folder where it names none: runs/ and the config's name, beside it (two
    such configs no longer share one folder)."""
    return f"runs/{config.stem}"


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    without a word: `training:` twice dropped the first's settings)."""


def _mapping(loader: _UniqueKeys, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges; its keys may be overridden
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice: keep one", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(text: str, name: str = "<text>") -> Any:
    """YAML text as Python values, a key given twice in one mapping refused; `name` (the
    file's) is where its error messages say the mistake is."""
    stream = io.StringIO(text)
    stream.name = name  # PyYAML names the stream by it
    return yaml.load(stream, Loader=_UniqueKeys)  # a SafeLoader: no arbitrary objects


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config; relative paths in it are taken from its folder, and
    without an `output_dir` it trains into runs/NAME beside it (NAME: the file's name)."""
    path = require_file(path, "config file", ConfigError)
    try:
        raw = read_yaml(path.read_text(), str(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file") from None
    if isinstance(raw, dict) and "output_dir" not in raw:
        raw = {**raw, "output_dir": default_output(path)}
    try:
        return parse_config(raw, base=path.resolve().parent)
    except ConfigError as err:
        raise ConfigError(f"{path}:\n{err}") from None
