"""One small registry for everything chosen by name: head kinds (`--task`), training methods
(`--method`), readout pools and extra-feature sets. An unknown name is a one-line usage error that
lists the choices; a new kind is one module plus one `register` call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tagcli.errors import TagcliError, UsageError

T = TypeVar("T")


class Registry(dict[str, T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, what: str, error: type[TagcliError] = UsageError) -> None:
        super().__init__()
        self.what = what  # what an entry is, for messages ("task", "method", ...)
        self.error = error

    def register(self, name: str) -> Callable[[T], T]:
        """Register an entry under `name` (usable as a decorator); a name is taken once."""

        def add(entry: T) -> T:
            if name in self and self[name] is not entry:
                raise ValueError(f"a {self.what} named {name!r} is already registered")
            self[name] = entry
            return entry

        return add

    def choose(self, name: object) -> T:
        """The entry called `name`, or an error naming the choices."""
        if not isinstance(name, str) or name not in self:
            raise self.error(f"unknown {self.what} {name!r}; choose from {', '.join(self)}")
        return self[name]
