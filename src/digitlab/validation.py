"""Checking a value against a schema model, and saying what is wrong in one line.

`validate(model, data, where)` checks; a Pydantic `ValidationError` never reaches a user:
`one_line(exc, where)` turns its first problem into the message the CLI prints after
`Error:` (exit 2) and the API returns as 4xx. `unknown` and `did_you_mean` word every
unknown name the same way. The models themselves are in `digitlab.schema`, which re-exports
these names.
"""

from __future__ import annotations

import contextvars
import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from digitlab.choices import (
    DATASETS,
    INPUTS,
    LEARNING_RATE_SCHEDULES,
    LOSSES,
    METRICS,
    OPTIMIZERS,
    PRUNERS,
    RUN_STATUSES,
)
from digitlab.errors import SpecError

# Choice fields: what one value is called in a message, its plural, and the valid values.
_CHOICES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "optimizer": ("optimizer", "optimizers", tuple(OPTIMIZERS)),
    "loss": ("loss", "losses", LOSSES),
    "metrics": ("metric", "metrics", METRICS),
    "input": ("input", "inputs", INPUTS),
    "learning_rate_schedule": ("schedule", "schedules", LEARNING_RATE_SCHEDULES),
    "dataset": ("dataset", "datasets", DATASETS),
    "status": ("status", "statuses", RUN_STATUSES),
    "pruner": ("pruner", "pruners", PRUNERS),
}


# True while a model is being validated by `validate` or inside an outer model.
building: contextvars.ContextVar[bool] = contextvars.ContextVar("building", default=False)


# ---------------------------------------------------------------------------------- messages
def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest valid name, case aside ('SGDD': sgd), or ""
    when none is close."""
    folded = {str(v).casefold(): str(v) for v in valid}
    match = difflib.get_close_matches(str(name).casefold(), list(folded), n=1)
    return f" (did you mean '{folded[match[0]]}'?)" if match else ""


def printable(name: object) -> str:
    """`name` as a one-line message can show it: a line break, tab or other control
    character in it is escaped (`a\\nb`), the rest is kept."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))


def unknown(kind: str, name: object, valid: Iterable[str], plural: str | None = None) -> str:
    """The one message for a name that isn't one of `valid`:
    `unknown optimizer 'adm' (did you mean 'adam'?); valid optimizers: adam, sgd, ...`."""
    valid = list(valid)
    return (
        f"unknown {kind} '{printable(name)}'{did_you_mean(name, valid)}; "
        f"valid {plural or kind + 's'}: {', '.join(map(str, valid))}"
    )


def _field(loc: tuple) -> str:
    """The dotted name of the field a Pydantic error points at, list positions left out."""
    names = [printable(part) for part in loc if not isinstance(part, int)]
    return ".".join(names) or "the value"


def _describe(error: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx") or {}
    name = _field(loc)
    last = next((str(p) for p in reversed(loc) if not isinstance(p, int)), name)
    given = error.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        key = str(loc[-1])
        where = f" in [{_field(loc[:-1])}]" if _field(loc[:-1]) != "the value" else ""
        return f"unknown key '{printable(key)}'{where}{did_you_mean(key, valid)}" + (
            f"; valid keys: {', '.join(valid)}" if valid else ""
        )
    if kind == "literal_error" and last in _CHOICES:
        singular, plural, valid = _CHOICES[last]
        return unknown(singular, given, valid, plural)
    if kind == "missing":
        return f"'{name}' is missing"
    needs = {
        "int_type": "a whole number",
        "int_from_float": "a whole number",
        "int_parsing": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "finite_number": "a finite number",
        "string_type": "text",
        "bool_type": "true or false",
        "dict_type": "a table",
        "model_type": "a table",
        "model_attributes_type": "a table",
        "tuple_type": "a list",
        "list_type": "a list",
        "datetime_type": "a timestamp",
        "datetime_parsing": "a timestamp",
        "datetime_from_date_parsing": "a timestamp",
        "greater_than": f"greater than {ctx.get('gt')}",
        "greater_than_equal": f"at least {ctx.get('ge')}",
        "less_than": f"less than {ctx.get('lt')}",
        "less_than_equal": f"at most {ctx.get('le')}",
        "too_short": f"a list of at least {ctx.get('min_length')}",
        "too_long": f"a list of at most {ctx.get('max_length')}",
        "string_too_short": "non-empty text",
    }
    if kind in needs:
        return f"'{name}' must be {needs[kind]}, got {shown(given)}"
    message = str(ctx.get("error") or error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message if loc == () else f"'{name}': {message}"


def shown(value: Any) -> str:
    """A value as a message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The nested model class a location points into (for listing its valid keys)."""
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model


def one_line(exc: ValidationError, where: str) -> str:
    """A ValidationError as the one line a user reads: `where: what is wrong[ (+N more)]`."""
    errors = exc.errors(include_url=False)
    model = exc.title and _MODELS.get(exc.title)
    first = _describe(errors[0], model or None)
    more = (
        f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    )
    return f"{where}: {first}{more}"


def validate(model: type[BaseModel], data: Any, where: str, error=SpecError, *, json=False):
    """`model.model_validate(data)` (or `model_validate_json` for JSON text), or `error`
    with `one_line`'s message."""
    token = building.set(True)  # models report here, with `where`, not in their __init__
    try:
        return model.model_validate_json(data) if json else model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(exc, where)) from None
    finally:
        building.reset(token)


# Model class name -> the class, for `one_line` to list a model's valid keys; schema.py
# registers its models when imported, models defined elsewhere use `register` as a decorator.
_MODELS: dict[str, type[BaseModel]] = {}


def register(model: type[BaseModel]) -> type[BaseModel]:
    """Let `one_line` list a model's valid keys (a class decorator for models elsewhere)."""
    _MODELS[model.__name__] = model
    return model
