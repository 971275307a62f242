"""Options as typed dataclasses: the one place a setting's default, help text, flag and bounds live.

`TrainConfig` (the run) is such a dataclass; each head kind's and each training method's `Options`
subclass the frozen `Options` below. `tagcli train` builds its flags from their fields (grouped by the
kind that declares them), a `--config` TOML file takes the same keys, packs record the values, the
model card says them as the flags that reproduce them (`Options.card_line`), and `check_bounds`
refuses an out-of-range value with a message that names the flag. A field's metadata:

    help   what it sets (the flag's help text)
    flag   the flag when it is not `--field-name` (plural fields are repeatable singular flags)
    form   how a repeatable value is written, e.g. "SLOT=COLUMN"
    min    / max   inclusive bounds of a number
    scope  which commands take it: "all" (default), "function" or "domain" stages, or "api" (no flag)
    recorded   a setting that shapes the result, recorded with the pack's hyperparameters
"""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from tagcli.errors import UsageError


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    form: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    scope: str = "all",
    recorded: bool = False,
) -> Any:
    """A dataclass field with the metadata above (mutable defaults are copied per instance)."""
    metadata = {"help": help, "flag": flag, "form": form, "min": minimum, "max": maximum, "scope": scope}
    metadata |= {"recorded": True} if recorded else {}
    metadata = {k: v for k, v in metadata.items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


OptionsT = TypeVar("OptionsT", bound="Options")


@dataclasses.dataclass(frozen=True)
class Options:
    """The typed options of a head kind or a training method; this class itself: none of its own.

    A subclass is a frozen dataclass whose fields are `option(...)`s (normalising `__post_init__`s set
    fields with `object.__setattr__`)."""

    def for_tag_training(self: OptionsT) -> OptionsT:
        """The options of the head the tag trains with (the final head may be richer)."""
        return self

    def resolve(self: OptionsT, n_layers: int, slots: Mapping[str, str]) -> OptionsT:
        """Defaults that depend on the base model and the input slots (slot → input kind), made
        concrete (the pack records them so)."""
        return self

    @classmethod
    def card_line(cls, recorded: Mapping[str, Any], owner: str) -> str | None:
        """The model card's line of these options as a pack recorded them: the flags that reproduce them
        (`--members 5 --calibrate`). Keys the class does not declare are ignored and absent ones skipped
        (older packs recorded fewer); None when nothing is left to say."""
        words = [w for f in dataclasses.fields(cls) if f.name in recorded for w in _flag_words(f, recorded[f.name])]
        return f"- **Options of the {owner}:** `{shlex.join(words)}`" if words else None


def _flag_words(field: dataclasses.Field, value: Any) -> list[str]:
    """`value` as command-line words of the field's flag: a repeatable flag once per item, a boolean
    as `--x` or `--no-x`, an empty collection or None as nothing."""
    name = flag(field)
    if isinstance(value, bool):
        return [name if value else f"--no-{name[2:]}"]
    if isinstance(value, Mapping):  # `KEY=VALUE` items; "*" stands for "every one" and is left out
        return [w for key, v in value.items() for w in (name, str(v) if key == "*" else f"{key}={v}")]
    if isinstance(value, (list, tuple)):
        return [w for v in value for w in (name, str(v))]
    return [] if value is None else [name, str(value)]


def flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of an options dataclass (annotations are strings under `from __future__`)."""
    return typing.get_type_hints(cls)


def check_bounds(options: Any) -> None:
    """Refuse numbers outside their fields' bounds, naming the flag: `--members must be at least 1, got 0`."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = field.metadata.get("min"), field.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise UsageError(f"{flag(field)} must be {_range(low, high)}, got {value}", hint=field.metadata["help"])


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    return f"at least {low:g}" if low is not None else f"at most {high:g}"


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """`cls(**values)` with the types checked, bounds checked and unknown keys refused (naming `owner`)."""
    unknown = sorted(set(values) - set(field_names(cls)))
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise UsageError(f"{flags} {'is not an option' if len(unknown) == 1 else 'are not options'} of {owner}")
    types = hints(cls)
    for name, value in values.items():
        if not _fits(value, types[name]):
            raise UsageError(f"--{name.replace('_', '-')} takes {_type_text(types[name])}, not {value!r}")
    options = cls(**values)
    check_bounds(options)
    return options


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value (from a TOML file or the Python API) has the field's type; ints pass for floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, Mapping)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_text(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    base = args[0] if args and typing.get_origin(hint) is not list else hint
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(base, str(base))
