"""Options and arguments shared by several commands, each defined once.

The training flags (`--epochs`, `--batch-size`, ...) are not written here: `with_train_flags`
makes one per `TrainConfig` field, so a new field is a new flag of `digitlab train`.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal

import typer

from digitlab.data import DEFAULT_DATASET
from digitlab.presets import preset_names
from digitlab.schema import DATASETS, TrainConfig


def choices(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A CLI choice enum built from the library's one list of the names. Its option takes
    `case_sensitive=False`: a choice in any case is its one canonical name (`MNIST`)."""
    return StrEnum(name, {value.replace("-", "_"): value for value in values})


Dataset = choices("Dataset", DATASETS)


DatasetOption = typer.Option(
    Dataset(DEFAULT_DATASET),
    "--dataset",
    "-d",
    metavar="NAME",
    case_sensitive=False,  # MNIST is mnist
    help=TrainConfig.model_fields["dataset"].description,
)
DataDirOption = typer.Option(
    None,
    "--data-dir",
    envvar="DIGITLAB_DATA_DIR",
    help="A folder holding the four IDX files (raw or .gz) or mnist.npz; tried first.",
)
RunsDirOption = typer.Option(
    None, "--runs-dir", envvar="DIGITLAB_RUNS_DIR", help="Folder of runs [default: ./runs]."
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead.")


PresetOption = typer.Option(
    None, "--preset", "-p", help=f"A named network: {', '.join(preset_names())} [default: seed]."
)
SpecOption = typer.Option(None, "--spec", "-s", help="A TOML spec file (layers, [train]).")


def port_option(default: int):
    """`--port`, checked by Typer as 1–65535: a bad port is a one-line usage error (exit 2)
    before anything is loaded. `serve`, `board` and `tune dashboard` use it."""
    return typer.Option(default, "--port", min=1, max=65535, help="TCP port, 1–65535.")


RunArgument = typer.Argument(
    ..., help="A run: its path, its name as `digitlab runs` shows it, or latest."
)


StudyOption = typer.Option(
    "digitlab", "--study", help="The study's name: the same name resumes it, or joins it."
)
StorageOption = typer.Option(
    None,
    "--storage",
    envvar="DIGITLAB_TUNE_STORAGE",
    help="A journal file, or a database URL: postgresql://HOST/DB "
    "[default: RUNS_DIR/tune.journal].",
)


# ------------------------------------------------------------------------- training flags
# `train --help` lists these first, in this order; a TrainConfig field not named here follows.
TRAIN_FLAG_ORDER = (
    "epochs",
    "batch_size",
    "learning_rate",
    "learning_rate_schedule",
    "optimizer",
    "loss",
    "metrics",
    "validation_split",
    "seed",
    "early_stopping",
    "train_samples",
    "ema_momentum",
    "dataset",
)
# Flags Typer checks as a choice, in any case; the other choices reach the schema, which reads
# them in any case too (`SGD` is sgd) and suggests a fix for a misspelt one.
CHOICE_FLAGS: dict[str, type[StrEnum]] = {"dataset": Dataset}


def train_flag_names() -> list[str]:
    """TrainConfig's field names in the order `train --help` lists their flags."""
    fields = list(TrainConfig.model_fields)
    rank = {name: i for i, name in enumerate(TRAIN_FLAG_ORDER)}
    return sorted(fields, key=lambda name: rank.get(name, len(rank) + fields.index(name)))


def flag(field: str) -> str:
    """The long flag of a TrainConfig field: `--batch-size` for `batch_size`."""
    return "--" + field.replace("_", "-")


def _flag_type(field: str, annotation: Any) -> Any:
    """What Typer parses a field's flag as: its number type, a choice, or text (a Literal
    and a comma-separated list are checked by the schema, which names the valid values)."""
    if field in CHOICE_FLAGS:
        return CHOICE_FLAGS[field]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = (arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) in (Literal, tuple):
        return str
    return annotation


def _train_flag(field: str) -> inspect.Parameter:
    info = TrainConfig.model_fields[field]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    option = typer.Option(
        None,
        flag(field),
        *extra.get("flags", ()),
        metavar=extra.get("metavar"),
        case_sensitive=field not in CHOICE_FLAGS,
        help=info.description,
    )
    kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(
        field, kind, default=option, annotation=_flag_type(field, info.annotation) | None
    )


def with_train_flags(command: Callable) -> Callable:
    """Give `command` one option per TrainConfig field, after its `spec_file` parameter; the
    values reach its `**flags` (None: not given). Typer reads the `__signature__` set here."""
    signature = inspect.signature(command, eval_str=True)
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        if parameter.name == "spec_file":
            parameters += [_train_flag(field) for field in train_flag_names()]
    command.__signature__ = signature.replace(parameters=parameters)
    return command


def train_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The training flags given, as TrainConfig values: a choice's value, a comma-separated
    list split (`--metrics accuracy,recall`)."""
    overrides = {}
    for field, value in flags.items():
        if isinstance(value, StrEnum):
            value = value.value
        elif typing.get_origin(TrainConfig.model_fields[field].annotation) is tuple:
            value = [part.strip() for part in value.split(",")] if value else None
        overrides[field] = value
    return overrides
