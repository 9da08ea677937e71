"""What a run is made of, resolved from layers: a preset < a TOML spec file < flags (or kwargs).

The models themselves (`Spec`, `TrainConfig`) and their checks live in `digitlab.schema`;
this module reads spec files and applies the layers in order, for the CLI and the Python API
alike. Every value goes through the same models, so a typo in a spec file, a bad flag and a
bad keyword argument get the same one-line `SpecError` before a minute of training is spent.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from digitlab.errors import SpecError
from digitlab.files import MAX_JSON_BYTES, read_capped
from digitlab.schema import Spec, TrainConfig, unknown, validate

__all__ = ["Spec", "TrainConfig", "load_spec_file", "read_toml", "resolve_spec", "with_overrides"]

SPEC_FILE_KEYS = ("name", "description", "input", "train", "layers")


def with_overrides(spec: Spec, **overrides: Any) -> Spec:
    """Return `spec` with training fields replaced; None values mean "not given".

    Raises:
        SpecError: an override names no TrainConfig field, or its value is invalid.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in given:
        if key not in TrainConfig.model_fields:
            raise SpecError(unknown("training option", key, TrainConfig.model_fields))
    if not given:
        return spec
    if isinstance(given.get("metrics"), list):
        given["metrics"] = tuple(given["metrics"])
    train = validate(TrainConfig, {**spec.train.model_dump(), **given}, "training options")
    return spec.replace(train=train)


def read_toml(path: str | Path, kind: str) -> dict[str, Any]:
    """A TOML file's tables, or a one-line SpecError naming the `kind` of file and the path.

    The file must be a regular file of at most 10 MB: a folder, a FIFO or a device is refused.
    """
    path = Path(path)
    data = read_capped(path, MAX_JSON_BYTES, SpecError)
    try:
        return tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise SpecError(f"{kind} {path} is not valid TOML: {exc}") from None


def load_spec_file(path: str | Path, base: Spec) -> Spec:
    """Read a TOML spec file on top of `base` (a preset).

    The file may hold `name`, `description`, `input`, a `[train]` table (TrainConfig fields)
    and `[[layers]]` tables (each with `type` and the layer's Keras arguments). Layers given
    in the file replace the preset's; training fields override one by one.

    Raises:
        SpecError: the file is missing, is not valid TOML, has an unknown key or a bad value.
    """
    path = Path(path)
    data = read_toml(path, "spec file")
    train = data.get("train", {})
    merged = {
        **base.model_dump(),
        "name": path.stem,
        "description": "",
        **{key: value for key, value in data.items() if key != "train"},
        "train": {**base.train.model_dump(), **train} if isinstance(train, dict) else train,
    }
    return validate(Spec, merged, f"spec file {path}")


def resolve_spec(
    preset: str | None = None, spec_file: str | Path | None = None, **overrides: Any
) -> Spec:
    """The spec a command trains: a preset (default `seed`), then a spec file, then overrides.

    Later layers win: `resolve_spec("mlp", "wide.toml", epochs=3)` is the mlp preset, with
    what wide.toml sets, trained for 3 epochs. None values are "not given".

    Raises:
        SpecError: an unknown preset, a bad spec file, or an invalid override.
    """
    from digitlab.presets import get_preset

    spec = get_preset(preset or "seed")
    if spec_file is not None:
        spec = load_spec_file(spec_file, base=spec)
    return with_overrides(spec, **overrides)
