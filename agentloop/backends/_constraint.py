"""Constraints on what a completion may say, and the error for a backend that cannot honour one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from agentloop.errors import BackendError

__all__ = ["CONSTRAINT_KINDS", "Constraint", "ConstraintKind", "UnsupportedCapabilityError"]

ConstraintKind = Literal["grammar", "regex", "choice"]
CONSTRAINT_KINDS: frozenset[ConstraintKind] = frozenset(get_args(ConstraintKind))


class UnsupportedCapabilityError(BackendError):
    """A backend was asked for something it cannot do (a constraint, ``score``); nothing was sent."""


@dataclass(frozen=True, slots=True)
class Constraint:
    """What the whole completion must match.

    * ``grammar``: a context-free grammar in Lark syntax (llguidance's dialect: the
      ``start`` rule, string literals, ``/regex/`` terminals, ``%ignore``).
    * ``regex``: a regular expression the whole completion must match (anchored at
      both ends). Stick to the common subset: no lookaround, no backreferences.
    * ``choice``: the completion is exactly one of these strings.

    Build one with :meth:`grammar`, :meth:`regex` or :meth:`choice`.
    """

    kind: ConstraintKind
    value: str | tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"constraint kind must be grammar, regex or choice, got {self.kind!r}")
        if self.kind == "choice":
            if isinstance(self.value, str):
                raise TypeError("a choice constraint takes a sequence of strings, not one string")
            options = tuple(self.value)
            if not options:
                raise ValueError("a choice constraint needs at least one option")
            if not all(isinstance(o, str) for o in options):
                raise TypeError("choice options must be strings")
            object.__setattr__(self, "value", options)
        elif not isinstance(self.value, str) or not self.value:
            raise ValueError(f"a {self.kind} constraint needs a non-empty string")

    @classmethod
    def grammar(cls, lark: str) -> Constraint:
        """The completion must be a sentence of this Lark grammar (from its ``start`` rule)."""
        return cls("grammar", lark)

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """The whole completion must match ``pattern``."""
        return cls("regex", pattern)

    @classmethod
    def choice(cls, options: Iterable[str]) -> Constraint:
        """The completion must be exactly one of ``options``."""
        return cls("choice", tuple(options))

    @property
    def options(self) -> tuple[str, ...]:
        """The allowed strings of a ``choice`` constraint."""
        if not isinstance(self.value, tuple):
            raise AttributeError(f"a {self.kind} constraint has no options")
        return self.value

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"kind": self.kind, "value": value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Constraint:
        value = d["value"]
        return cls(d["kind"], value if isinstance(value, str) else tuple(value))

    def describe(self) -> str:
        """A few words for error messages: 'a regex constraint', 'a choice of 3 strings'."""
        if isinstance(self.value, tuple):
            return f"a choice of {len(self.value)} strings"
        return f"a {self.kind} constraint"

    def matches(self, text: str) -> bool | None:
        """Whether ``text`` satisfies a choice or regex constraint (Python's ``re``); None for grammars."""
        if self.kind == "choice":
            return text in self.options
        if self.kind == "regex":
            import re

            return re.fullmatch(str(self.value), text) is not None
        return None
