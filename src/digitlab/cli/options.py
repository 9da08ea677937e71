"""Options and arguments shared by several commands, each defined once."""

from __future__ import annotations

from enum import StrEnum

import typer

from digitlab.presets import preset_names
from digitlab.schema import DATASETS


def choices(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A CLI choice enum built from the library's one list of the names."""
    return StrEnum(name, {value.replace("-", "_"): value for value in values})


Dataset = choices("Dataset", DATASETS)


class Split(StrEnum):
    train = "train"
    test = "test"


DatasetOption = typer.Option(
    Dataset("mnist"), "--dataset", "-d", metavar="NAME", help="mnist or fashion-mnist."
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


RunArgument = typer.Argument(..., help="A run: its path, its name in the runs folder, or latest.")


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
