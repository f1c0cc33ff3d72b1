"""The experiment configuration: frozen dataclasses shared by the Python API and YAML files.

The CLI validates a YAML mapping into `RunConfig` with pydantic (unknown fields are refused);
relative paths in it are resolved against the YAML file's folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from polytask._params import check_params
from polytask._validation import describe_validation_error
from polytask.balancers._registry import balancer_class, make_balancer
from polytask.data._augment import Augment
from polytask.data._builtin import BUILTINS, builtin_data
from polytask.data._readers import format_of
from polytask.data._tabular import feature_list_problem
from polytask.models._base import MultiTaskNet
from polytask.models._ensemble import Ensemble
from polytask.models._registry import build_model, check_architecture, image_architectures
from polytask.models.encoders import InputShape
from polytask.tasks._from_column import TaskColumn, task_family
from polytask.tasks._task import Task
from polytask.train._config import TrainConfig

_FORBID = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class FeaturesConfig:
    """Input columns: numeric ones are standardised, categorical ones one-hot encoded. `log`:
    numeric columns read as their logarithm (positive, right-skewed measures: amounts, counts
    plus one, ratios such as voice jitter), which often makes their effect closer to linear."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    log: tuple[str, ...] = ()

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        problem = feature_list_problem(self.numeric, self.categorical, self.log)
        if problem:
            raise ValueError(problem)


def _fix_path(p: str | None, base: Path) -> str | None:
    """`p` resolved against `base` when relative (`~` is the home folder, as in a shell: it
    made a folder named ~ beside the config)."""
    if p is None:
        return None
    p = os.path.expanduser(p)
    return p if Path(p).is_absolute() else os.path.normpath(base / p)


@dataclass(frozen=True)
class SplitConfig:
    """Either a split file (.npz with train_idx / test_idx, validation carved from train) or
    random fractions; `seed` draws the rows. `within`: a column whose every value is split on
    its own (each school's students cut by the fractions; the default for tasks made from a
    column), so that every group has rows in every part. `by`: a column whose groups go
    whole to one part (every row of a patient in test: how well for a new patient); with a
    file, the file's parts stay as they are and the validation rows are carved as whole groups
    (and `polytask tune` folds whole groups)."""

    file: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    seed: int = 0
    within: str | None = None
    by: str | None = None

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.by is not None and self.within is not None:
            raise ValueError("split.by (whole groups to a part) excludes split.within (each "
                             "group split across the parts): give one")  # fmt: skip
        if self.file is None and not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.file is None and self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction {self.val_fraction} and test_fraction {self.test_fraction} add "
                f"up to {self.val_fraction + self.test_fraction:g}, leaving no training rows: "
                "lower one of them (their sum must be below 1)"
            )


@dataclass(frozen=True)
class SourceConfig:
    """One of several data sets (CSV files), each with its own rows and split (default:
    data.split). `tasks`: the tasks it labels (default: every task whose target
    columns it has)."""

    path: str
    tasks: tuple[str, ...] | None = None
    split: SplitConfig | None = None
    """This source's split, whole (fields it leaves out take their defaults); None: data.split."""

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        twice = sorted({t for t in self.tasks or () if list(self.tasks or ()).count(t) > 1})
        if twice:
            raise ValueError(f"source {self.path}: tasks lists {twice} more than once")


@dataclass(frozen=True)
class ImagesConfig:
    """Images as inputs: a `manifest` CSV (an `image_column` of paths, relative to `root`,
    by default the manifest's folder, and one column per task: a label or value, or a path to
    a mask / map / JSON file), or `folders` (a folder of class folders: tasks read its `label`
    column). Images are resized to `size` (height, width) with `channels` (1: grey, 3: RGB)
    and normalised per channel by `mean` / `std` (measured on up to 256 training images when
    not given). `augment`: the training images' augmentations. `split_column`: a manifest
    column of `train` / `val` / `test` that splits the rows (instead of `data.split`)."""

    size: tuple[int, int]
    manifest: str | None = None
    folders: str | None = None
    root: str | None = None
    image_column: str = "image"
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: Augment | None = None
    split_column: str | None = None

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        given = [n for n in ("manifest", "folders") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "images: give exactly one of manifest (a CSV of image paths and labels) and "
                f"folders (a folder of class folders); got {given or 'none'}"
            )
        if self.folders is not None:
            extra = [n for n in ("root", "split_column") if getattr(self, n) is not None]
            if extra or self.image_column != "image":
                named = extra + ["image_column"] * (self.image_column != "image")
                raise ValueError(
                    f"images: {', '.join(named)} apply to a manifest; folders list their images "
                    "themselves (columns image and label)"
                )
        if min(self.size) < 1:
            raise ValueError(f"images.size must be [height, width] of positive sizes, got "
                             f"{list(self.size)}")  # fmt: skip
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(
                    f"images.{name} must give one value per channel ({self.channels}), got "
                    f"{list(values)}"
                )
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"images.std must be positive, got {list(self.std)}")

    @property
    def location(self) -> str:
        """The manifest or folder the images are listed by (for messages)."""
        return str(self.manifest if self.manifest is not None else self.folders)


def _check_sequence_part(
    name: str, too_long: str, bucket_size: int | None, split_column: str | None
) -> None:
    """What `data.text` and `data.audio` share: the too_long policy and the bucket window."""
    if too_long not in ("truncate", "refuse"):
        raise ValueError(
            f"{name}.too_long must be truncate (cut longer rows, with a warning) or refuse "
            f"(stop, naming the row), got {too_long!r}"
        )
    if bucket_size is not None and bucket_size < 1:
        raise ValueError(f"{name}.bucket_size must be a positive number of rows, got {bucket_size}")
    if split_column is not None and not split_column.strip():
        raise ValueError(f"{name}.split_column is empty: name a column of train / val / test")


@dataclass(frozen=True)
class TokenizerFile:
    """A tokenizer made elsewhere: `path` is a `tokenizer.json` (the `tokenizers` format that
    Hugging Face fast tokenizers save) or a folder holding one, e.g. the checkpoint folder an
    `hf` encoder loads. Its [PAD] must be id 0; inputs start with its [CLS] (or <s>)."""

    path: str

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if not str(self.path).strip():
            raise ValueError("text.tokenizer.path is empty: name a tokenizer.json or its folder")


@dataclass(frozen=True)
class TextConfig:
    """Texts as inputs: a table at `path` (`format` csv, jsonl or conll; by the suffix when not
    given: .csv, .csv.gz, .jsonl, .conll) with the texts in `text_column` and one column per
    task (a label or value per text, or for tasks per token a list of tags per word, for
    sequence-to-sequence tasks a target text). A CoNLL file has one token per line with the
    fields `columns` names (the word first), sentences separated by blank lines: its rows are
    the sentences, `text` their words and each other column their list of tags.

    A `tokenizer` (bpe, wordpiece or word) of about `vocab_size` tokens is trained on the
    training rows (`lowercase`: fold case first), or one made elsewhere is loaded
    (`tokenizer: {path: DIR}`: the tokenizer.json of an `hf` encoder's checkpoint);
    inputs hold at most `max_length` tokens ([BOS] first, then the text's): longer texts are
    cut (`too_long: truncate`, with a warning) or refused (`refuse`).
    `stream`: read the file a batch at a time instead of whole (for corpora larger than
    memory: only each row's place in the file, token count and sequence-level target are
    held).
    `bucket`: training batches of texts of similar length (less padding; `bucket_size` rows,
    default 100 batches, are sorted by length together). `split_column`: a column of
    train / val / test that splits the rows (instead of `data.split`)."""

    path: str
    format: Literal["csv", "jsonl", "conll"] | None = None
    text_column: str = "text"
    columns: tuple[str, ...] | None = None
    tokenizer: Literal["bpe", "wordpiece", "word"] | TokenizerFile = "bpe"
    vocab_size: int = 4000
    lowercase: bool = False
    max_length: int = 128
    too_long: Literal["truncate", "refuse"] = "truncate"
    bucket: bool = True
    bucket_size: int | None = None
    split_column: str | None = None
    stream: bool = False

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if Path(self.path).suffix.lower() == ".txt" and self.format is None:
            raise ValueError(
                f"text.path {self.path}: a .txt file is read as a CoNLL token file; say so "
                "with format: conll and columns: [words, ...] (or give a .csv or .jsonl table)"
            )
        fmt = format_of(self.path, self.format)
        if fmt == "conll":
            if not self.columns:
                raise ValueError(
                    "text: a CoNLL file needs columns naming its fields in order, the word "
                    "first, e.g. columns: [words, ner]"
                )
            twice = sorted({c for c in self.columns if list(self.columns).count(c) > 1})
            if twice or "text" in self.columns[1:]:
                raise ValueError(
                    f"text.columns must name each field once, and not 'text' (the sentence "
                    f"column made from the words); got {list(self.columns)}"
                )
            if self.text_column != "text":
                raise ValueError(
                    "text.text_column applies to CSV and JSON lines; a CoNLL file's sentences "
                    "are in column text"
                )
        elif self.columns is not None:
            raise ValueError(
                "text.columns names the fields of a CoNLL file (format: conll); a CSV or JSON "
                "lines table names its own columns: give text_column and the tasks' targets"
            )
        if self.vocab_size < 8:
            raise ValueError(
                f"text.vocab_size must be at least 8 (4 special tokens and some text), got "
                f"{self.vocab_size}"
            )
        if self.max_length < 2:
            raise ValueError(
                f"text.max_length must be at least 2 tokens ([BOS] and one of the text), got "
                f"{self.max_length}"
            )
        _check_sequence_part("text", self.too_long, self.bucket_size, self.split_column)
        if self.stream and str(self.path).lower().endswith(".gz"):
            raise ValueError(
                f"text.stream reads rows by their place in the file, which a compressed file "
                f"({self.path}) does not allow: decompress it, or set stream: false"
            )

    @property
    def file_format(self) -> Literal["csv", "jsonl", "conll"]:
        """`format`, or the one the path's suffix implies."""
        return format_of(self.path, self.format)


@dataclass(frozen=True)
class AudioConfig:
    """Audio as inputs: a `manifest` (CSV or JSON lines) with an `audio_column` of file paths
    (relative to `root`, by default the manifest's folder) and one column per task (a label or
    value per file, or a transcript). Files are read as mono waveforms at `sample_rate` (WAV;
    other formats with soundfile installed), at most `max_seconds` long: longer ones are cut
    (`too_long: truncate`, with a warning) or refused (`refuse`). `bucket`, `bucket_size`,
    `split_column`: as for text."""

    manifest: str
    root: str | None = None
    audio_column: str = "audio"
    format: Literal["csv", "jsonl"] | None = None
    sample_rate: int = 16000
    max_seconds: float = 30.0
    too_long: Literal["truncate", "refuse"] = "truncate"
    bucket: bool = True
    bucket_size: int | None = None
    split_column: str | None = None

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        if format_of(self.manifest, self.format) == "conll":
            raise ValueError("audio.manifest must be a CSV or JSON lines table, not CoNLL")
        if self.sample_rate < 1000:
            raise ValueError(
                f"audio.sample_rate must be at least 1000 samples per second, got "
                f"{self.sample_rate} (speech is usually 16000)"
            )
        if not 0 < self.max_seconds <= 3600:
            raise ValueError(
                f"audio.max_seconds must be in (0, 3600] seconds, got {self.max_seconds}"
            )
        _check_sequence_part("audio", self.too_long, self.bucket_size, self.split_column)


@dataclass(frozen=True)
class MoleculesConfig:
    """Molecules as inputs: a CSV `path` whose `column` holds each row's atoms (an XYZ file
    path, relative to `root`, by default the table's folder; an XYZ block; or `C 0 0 0; O 0 0
    1.21`) and one column per task. Read into padded atom rows for the `molecule` encoder."""

    path: str
    column: str = "xyz"
    root: str | None = None

    __pydantic_config__ = _FORBID


def _split_column_alone(what: str, column: str | None, split: SplitConfig) -> None:
    """Refuse split settings beside a split column, which names every row's part: they would be
    silently unused."""
    if column is None or split == SplitConfig():
        return
    given = [f.name for f in dataclasses.fields(split)
             if getattr(split, f.name) != getattr(SplitConfig(), f.name)]  # fmt: skip
    raise ValueError(split_column_refusal(f"{what}.split_column", "split", given))


def split_column_refusal(column: str, split: str, given: Sequence[str]) -> str:
    """Why split settings (`given`, of `split`) beside a split `column` are refused."""
    return (
        f"{column} names every row's part, so {split}'s {', '.join(given)} would not be used: "
        f"leave data.split out, or drop {column} to split by fractions"
    )


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from: a CSV file (`path`, .csv or .csv.gz), a built-in generator
    (`builtin: customers` or `groups`, with `options` passed to `make_customers` or
    `make_grouped_frame`; see `polytask.data.BUILTINS`), several CSV files
    (`sources`, e.g. one per task with its own size and split; drawn from per step by
    `training.schedule`), images (`images`: a manifest or folders of class folders), texts
    (`text`: a table or CoNLL file) or audio (`audio`: a manifest of audio files). Features
    are the same columns in every file."""

    path: str | None = None
    builtin: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    features: FeaturesConfig | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    sources: tuple[SourceConfig, ...] | None = None
    images: ImagesConfig | None = None
    text: TextConfig | None = None
    audio: AudioConfig | None = None
    molecules: MoleculesConfig | None = None

    __pydantic_config__ = _FORBID

    def with_paths_from(self, base: Path) -> DataConfig:
        """Resolve relative data and split paths against `base` (the YAML's folder)."""

        def fix(p: str | None) -> str | None:
            return _fix_path(p, base)

        def fix_split(split: SplitConfig) -> SplitConfig:
            return dataclasses.replace(split, file=fix(split.file))

        sources = self.sources and tuple(
            dataclasses.replace(s, path=fix(s.path) or "", split=s.split and fix_split(s.split))
            for s in self.sources
        )
        images = self.images and dataclasses.replace(
            self.images,
            manifest=fix(self.images.manifest),
            folders=fix(self.images.folders),
            root=fix(self.images.root),
        )
        text = self.text and dataclasses.replace(
            self.text,
            path=fix(self.text.path) or "",
            tokenizer=TokenizerFile(fix(self.text.tokenizer.path) or "")
            if isinstance(self.text.tokenizer, TokenizerFile)
            else self.text.tokenizer,
        )
        audio = self.audio and dataclasses.replace(
            self.audio,
            manifest=fix(self.audio.manifest) or "",
            root=fix(self.audio.root),
        )
        molecules = self.molecules and dataclasses.replace(
            self.molecules, path=fix(self.molecules.path) or "", root=fix(self.molecules.root)
        )
        return dataclasses.replace(
            self,
            path=fix(self.path),
            split=fix_split(self.split),
            sources=sources,
            images=images,
            text=text,
            audio=audio,
            molecules=molecules,
        )

    def __post_init__(self) -> None:
        forms = ("path", "builtin", "sources", "images", "text", "audio", "molecules")
        given = [n for n in forms if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of path (a CSV file), builtin ({', '.join(BUILTINS)}), "
                f"sources (several CSV files), images (a manifest of images or folders of "
                f"them), text (a table or CoNLL file of texts), audio (a manifest of audio "
                f"files) and molecules (a CSV of molecules' atoms); got {given or 'none'}"
            )
        if self.molecules is not None:
            if self.features is not None:
                raise ValueError("molecules need no features: each row's input is its atoms")
            if self.options:
                raise ValueError("options are for the builtin generator only")
            return
        sequences = self.text if self.text is not None else self.audio
        if sequences is not None:
            what = "text" if self.text is not None else "audio"
            if self.features is not None:
                raise ValueError(f"{what} data need no features: each row's input is its {what}")
            if self.options:
                raise ValueError("options are for the builtin generator only")
            if sequences.split_column is not None and self.split.file is not None:
                raise ValueError(
                    f"give the split by {what}.split_column or by split.file, not both"
                )
            _split_column_alone(what, sequences.split_column, self.split)
            return
        if self.images is not None:
            if self.features is not None:
                raise ValueError("images need no features: each row's input is its image")
            if self.options:
                raise ValueError("options are for the builtin generator only")
            if self.images.split_column is not None and self.split.file is not None:
                raise ValueError("give the split by images.split_column or by split.file, not both")
            _split_column_alone("images", self.images.split_column, self.split)
            return
        if self.builtin is not None:
            builtin_data(self.builtin)  # an unknown name is refused with the nearest one
        if self.sources is not None:
            if not self.sources:
                raise ValueError("sources must list at least one CSV file")
            if self.features is None:
                raise ValueError("sources need features: {numeric: [...], categorical: [...]}")
            if self.split.file is not None:
                raise ValueError(
                    "data.split.file holds the rows of one table; with several sources give "
                    "each its own (sources[i].split.file), or fractions in data.split for all"
                )
            return
        if self.path is not None and self.features is None:
            raise ValueError("a CSV data set needs features: {numeric: [...], categorical: [...]}")
        if self.path is not None and self.options:
            raise ValueError("options are for the builtin generator only")


_MODEL_FIELDS = ("architecture", "params", "ensemble", "blend")
_BLEND_FIELDS = ("architecture", "params", "weight", "training", "ensemble")
MAX_ENSEMBLE = 100
"""More members than this is a mistake more often than a plan (each one is a full model)."""


@dataclass(frozen=True)
class BlendMember:
    """A model averaged into the configured one by `model.blend`: an architecture by registry
    name with its parameters (flat or in `params`, as in `model`), the `weight` its outputs get
    in the blend, and the `training` settings in which it differs from the run's (a forest:
    `{epochs: 1}`); `ensemble: N` makes it a seed ensemble of N. It trains on the same rows and
    tasks, apart from the others."""

    architecture: str
    weight: float
    params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    ensemble: Annotated[int, Strict()] = 1

    __pydantic_config__ = _FORBID

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_params(cls, data: Any) -> Any:
        """Every key other than architecture / params / weight / training / ensemble is a
        parameter."""
        return _folding(data, _BLEND_FIELDS)

    def __post_init__(self) -> None:
        if not 0 < self.weight < 1:
            raise ValueError(
                f"blend member {self.architecture!r}: weight {self.weight:g} must be between 0 "
                "and 1 (exclusive): the configured model keeps 1 minus the members' weights"
            )
        config = self.model_config()  # the architecture and its parameters, checked
        object.__setattr__(self, "params", config.params)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(self.training) - known)
        if unknown:
            raise ValueError(
                f"blend member {self.architecture!r}: training has unknown settings {unknown}; "
                "it takes the keys of the run's training section (e.g. {epochs: 1})"
            )

    def model_config(self) -> ModelConfig:
        """This member as a model section of its own."""
        return ModelConfig(self.architecture, self.params, ensemble=self.ensemble)

    def training_from(self, base: TrainConfig) -> TrainConfig:
        """The run's training settings with this member's own on top."""
        try:
            return dataclasses.replace(base, **self.training)
        except (ValueError, TypeError) as err:
            reason = describe_validation_error(err) if isinstance(err, ValidationError) else err
            raise ValueError(
                f"blend member {self.architecture!r}: its training settings {self.training} "
                f"do not work with the run's: {reason}"
            ) from None


@dataclass(frozen=True)
class ModelConfig:
    """The architecture by registry name (see `polytask.models.ARCHITECTURES`) and its
    parameters: the keyword parameters of its builder, validated against the builder's
    signature (unknown ones and bad values are refused here, before any data is read). The
    parameters may also be given flat, beside `architecture`: in YAML
    `{architecture: mmoe, hidden: [64], experts: 4}`, in Python
    `ModelConfig(architecture="mmoe", hidden=(64,), experts=4)`. `params` keeps the given
    ones (validated); the builder's defaults apply to the rest.

    `ensemble`: N > 1 trains N models of this configuration apart (seeds `training.seed` + i,
    each with its own validation rows carved from the training rows: `polytask.app.fit`) and
    serves the mean of their outputs (`polytask.models.Ensemble`).

    `blend`: other models (`BlendMember`: an architecture, its parameters, a weight w_i) trained
    apart on the same rows; the served output is (1 − Σ w_i) · this model's + Σ w_i · member
    i's. Unlike models (a multilevel model and a forest per task) err differently, so their
    blend can beat each; choose the weights by cross-validation (`polytask tune`), not on the
    test rows."""

    architecture: str = "hard_sharing"
    params: dict[str, Any] = field(default_factory=dict)
    ensemble: Annotated[int, Strict()] = 1
    blend: tuple[BlendMember, ...] = ()

    __pydantic_config__ = _FORBID

    if TYPE_CHECKING:  # the flat form: parameters as keywords beside `architecture`

        def __init__(
            self,
            architecture: str = ...,
            params: dict[str, Any] = ...,
            ensemble: int = ...,
            blend: Sequence[BlendMember | Mapping[str, Any]] = ...,
            **flat: Any,
        ) -> None: ...

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_params(cls, data: Any) -> Any:
        """Every key other than architecture / params / ensemble / blend is a parameter."""
        return _folding(data, _MODEL_FIELDS)

    def __post_init__(self) -> None:
        if isinstance(self.ensemble, bool) or not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise ValueError(
                f"ensemble must be a whole number from 1 (one model) to {MAX_ENSEMBLE} (the mean "
                f"of N models trained apart), got {self.ensemble!r}"
            )
        checked = check_architecture(self.architecture, self.params)
        object.__setattr__(self, "params", {k: checked[k] for k in self.params})
        share = sum(m.weight for m in self.blend)
        if share >= 1:
            raise ValueError(
                f"model.blend's weights add up to {share:g}: this model keeps 1 minus their sum, "
                "which must stay above 0; lower them"
            )

    def describe(self) -> str:
        """The model in a line: its architecture, given parameters, ensemble and blend."""
        text = _described(self.architecture, self.params, self.ensemble)
        if not self.blend:
            return text
        weights = self.blend_weights()
        others = [_described(m.architecture, m.params, m.ensemble) for m in self.blend]
        return f"{weights[0]:g} · {text} + " + " + ".join(
            f"{w:g} · {o}" for w, o in zip(weights[1:], others, strict=True)
        )

    def blend_weights(self) -> tuple[float, ...]:
        """The blend's weights: this model's (1 − Σ w_i), then each member's."""
        return (1 - sum(m.weight for m in self.blend), *(m.weight for m in self.blend))

    def build(
        self,
        features: int | Sequence[str] | InputShape,
        tasks: Sequence[Task],
        seed: int | None = None,
    ) -> MultiTaskNet:
        """The configured model for inputs of `features` encoded columns (names or count), or
        for inputs of a shape (`InputShape`, e.g. images: what `Encoding.model_input` gives),
        its initial weights drawn from `seed` when given (member i of an ensemble: seed + i);
        with a blend, the weighted `Ensemble` of this model and the blend's members."""
        if self.ensemble == 1:
            model = build_model(self.architecture, features, tasks, seed=seed, **self.params)
        else:
            model = Ensemble([
                build_model(self.architecture, features, tasks, seed=_plus(seed, i), **self.params)
                for i in range(self.ensemble)
            ])  # fmt: skip
        if not self.blend:
            return model
        others = [m.model_config().build(features, tasks, seed=seed) for m in self.blend]
        return Ensemble([model, *others], self.blend_weights())

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> ModelConfig:
        """From `dataclasses.asdict` of a ModelConfig, also as older versions stored it: every
        architecture's fields flat, None (or empty) where unset."""
        if "params" in saved:
            return cls(
                architecture=saved["architecture"],
                params=dict(saved["params"]),
                ensemble=int(saved.get("ensemble", 1)),
                blend=tuple(BlendMember(**m) for m in saved.get("blend", ())),
            )
        unset: list[object] = [None, (), [], {}]
        given = {k: v for k, v in saved.items() if not any(v == u for u in unset)}
        return cls(**given)


def _described(architecture: str, params: Mapping[str, Any], ensemble: int) -> str:
    given = ", ".join(f"{k}: {v}" for k, v in params.items())
    text = architecture + (f" {{{given}}}" if given else "")
    return text + (f" (ensemble of {ensemble})" if ensemble > 1 else "")


def _plus(seed: int | None, i: int) -> int | None:
    return None if seed is None else seed + i


def _folding(data: Any, fields: Sequence[str]) -> Any:
    """A model section's input (keywords or a mapping) with its flat parameters folded."""
    if isinstance(data, ArgsKwargs):
        return ArgsKwargs(data.args, _folded(data.kwargs or {}, fields))
    return _folded(data, fields) if isinstance(data, dict) else data


def _folded(data: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The flat form's parameters (keys other than `fields`) moved into `params` (refused when
    given in both places)."""
    flat = {k: v for k, v in data.items() if k not in fields}
    params = data.get("params") or {}
    if not flat or not isinstance(params, Mapping):
        return dict(data)  # nothing to fold, or a bad `params` that validation will name
    both = sorted(set(params) & set(flat))
    if both:
        raise ValueError(f"model parameters {both} are given twice: flat and in params")
    return {**{k: data[k] for k in fields if k in data}, "params": {**params, **flat}}


@dataclass(frozen=True)
class BalancerConfig:
    """A balancer by registry name with its parameters.

    Example: {name: dwa, params: {temperature: 2}}.
    """

    name: str = "ew"
    params: dict[str, Any] = field(default_factory=dict)

    __pydantic_config__ = _FORBID

    def __post_init__(self) -> None:
        # raises with the allowed names / parameters; kept as validated (YAML reads 2e0 as
        # text: recorded so, the same config written 2.0 read as another)
        validated = check_params("balancer", self.name, balancer_class(self.name), self.params)
        object.__setattr__(self, "params", {k: validated[k] for k in self.params})

    def for_tasks(self, task_names: Sequence[str]) -> BalancerConfig:
        """This balancer for a model of only `task_names` (a single-task baseline, a group of
        tasks): one task trains on its own loss (`ew`: weighting a single loss only rescales
        its steps, and some balancers need several tasks); several keep the balancer, with its
        per-task parameters cut to them."""
        if len(task_names) == 1:
            return BalancerConfig()
        params = balancer_class(self.name).params_for(self.params, task_names)
        return BalancerConfig(self.name, params)

    def check_tasks(self, task_names: Sequence[str]) -> None:
        """Raise ValueError when the balancer cannot weight these tasks (too few of them for
        the method, per-task parameters naming others), before any training."""
        make_balancer(self.name, **self.params).setup(task_names)


PER_TASK_MODEL_PARAMS = ("task_dropout", "inputs")
"""Model parameters given per task name."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one experiment needs."""

    data: DataConfig
    tasks: tuple[Task, ...]
    """The tasks; or, given a `TaskColumn` ({from_column: ..., target: ...}), one task per
    value of that column, made from the data when the config is made (`TaskColumn.tasks`)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/polytask"

    __pydantic_config__ = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    if TYPE_CHECKING:  # what the validator accepts for `tasks`, not only the stored tuple

        def __init__(
            self,
            data: DataConfig,
            tasks: Sequence[Task] | TaskColumn | Mapping[str, Any],
            model: ModelConfig = ...,
            balancer: BalancerConfig = ...,
            training: TrainConfig = ...,
            output_dir: str = ...,
        ) -> None: ...

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks_from_column(cls, value: Any, info: ValidationInfo) -> Any:
        """A `TaskColumn` (or its mapping) made into its tasks, reading the data's column."""
        if not isinstance(value, TaskColumn | dict):
            return value
        spec = TypeAdapter(TaskColumn).validate_python(value)
        data = info.data.get("data")
        if not isinstance(data, DataConfig):
            return value  # the data settings are wrong: said on their own
        from polytask.app._data import task_column_frame

        frame, where = task_column_frame(data, spec.columns)
        return spec.tasks(frame, where)

    def for_tasks(self, task_names: Sequence[str]) -> RunConfig:
        """This config for a model of only `task_names` (a single-task baseline, a group of
        tasks): the balancer for them (`BalancerConfig.for_tasks`: one task trains on its own
        loss), and the model's and training's per-task settings cut to them (the smaller model
        refuses those of other tasks)."""
        keep = set(task_names)
        params = dict(self.model.params)
        for name in PER_TASK_MODEL_PARAMS:
            if params.get(name):
                params[name] = {k: v for k, v in params[name].items() if k in keep}
        return dataclasses.replace(
            self,
            model=dataclasses.replace(self.model, params=params),
            balancer=self.balancer.for_tasks(task_names),
            training=self.training.for_tasks(task_names),
        )

    def __post_init__(self) -> None:
        family = task_family(self.tasks)
        split = self.data.split
        columned = any(  # a split column names every row's part: no within to add
            getattr(part, "split_column", None) is not None
            for part in (self.data.images, self.data.text, self.data.audio)
        )
        if family is not None and not columned and split.within is None and split.by is None:
            # one task per value of a column: each value's rows split on their own (with a
            # split file, the validation rows carved from each value's training rows)
            split = dataclasses.replace(self.data.split, within=family)
            object.__setattr__(self, "data", dataclasses.replace(self.data, split=split))
        if not self.tasks:
            raise ValueError("give at least one task")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {dupes}")
        wrapped = self.training.auxiliary_gradients != "plain"  # the balancer sees the main
        self.balancer.check_tasks([t.name for t in self.tasks if not (wrapped and t.auxiliary)])
        for field_name in PER_TASK_MODEL_PARAMS:
            unknown = sorted(set(self.model.params.get(field_name) or {}) - set(names))
            if unknown:
                raise ValueError(
                    f"model.{field_name} names unknown tasks {unknown}; tasks: {names}"
                )
        if self.data.images is None:
            dense = [t.name for t in self.tasks if t.kind_spec.dense]
            if dense:
                raise ValueError(
                    f"tasks {dense} predict per position of an image (their kinds read masks, "
                    "maps, boxes or keypoints): they need image data (data.images: a manifest "
                    "of image paths) and an image encoder"
                )
        self._check_sequences()
        for member in self.model.blend:
            member.training_from(self.training)  # its settings are refused here, not later
        if self.data.molecules is not None and self.model.params.get("encoder") != "molecule":
            raise ValueError(
                "molecule data need the molecule encoder: model: {architecture: hard_sharing, "
                "encoder: molecule} (an MLP would read atom rows as numbers)"
            )
        features = self.data.features
        columns = {*features.numeric, *features.categorical} if features else set()
        for task in self.tasks:
            both = sorted(columns & set(task.target_columns))
            if both:
                raise ValueError(
                    f"columns {both} are both a feature and task {task.name!r}'s target: a model "
                    "must not read its own labels; remove them from data.features"
                )
        for i, source in enumerate(self.data.sources or ()):
            unknown = sorted(set(source.tasks or ()) - set(names))
            if unknown:
                raise ValueError(
                    f"data.sources[{i}].tasks: unknown tasks {unknown}; tasks: {names}"
                )

    def _check_sequences(self) -> None:
        """Sequential tasks need text or audio data; text and audio need a sequence encoder
        (an MLP would read token ids or samples as numbers)."""
        data = self.data
        what = "text" if data.text is not None else "audio" if data.audio is not None else None
        if what is None:
            sequential = [t.name for t in self.tasks if t.kind_spec.sequential]
            if sequential:
                raise ValueError(
                    f"tasks {sequential} predict per token or a sequence (their kinds read tags, "
                    "texts or transcripts): they need text or audio data (data.text: a table "
                    "or CoNLL file of texts; data.audio: a manifest of audio files) and a "
                    "sequence encoder"
                )
            return
        encoder = {"text": "transformer", "audio": "audio"}[what]
        architectures = image_architectures()
        if self.model.architecture not in architectures:
            raise ValueError(
                f"architecture {self.model.architecture!r} takes table rows; {what} data need "
                f"an architecture with a sequence encoder: model: {{architecture: hard_sharing, "
                f"encoder: {encoder}}}"
            )
        given = self.model.params.get("encoder")
        if given in (None, "mlp"):
            raise ValueError(
                f"{what} data need a sequence encoder: set model.encoder: {encoder} (with its "
                "encoder_params), not the default mlp, which would read "
                + ("token ids" if what == "text" else "audio samples")
                + " as numbers"
            )

    def with_paths_from(self, base: Path) -> RunConfig:
        """Resolve relative data, split and output paths against `base` (the YAML's folder)."""
        data = self.data.with_paths_from(base)
        output = _fix_path(self.output_dir, base) or ""
        model = self.model
        encoder = model.params.get("encoder_params")
        if isinstance(encoder, dict) and isinstance(encoder.get("path"), str):
            # a local checkpoint folder (encoder hf): relative to the YAML file too
            fixed = {**encoder, "path": _fix_path(encoder["path"], base)}
            model = dataclasses.replace(model, params={**model.params, "encoder_params": fixed})
        return dataclasses.replace(self, data=data, model=model, output_dir=output)
