"""Small helpers shared by the graph modules."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from agentloop.types import Message

T = TypeVar("T")


def prompt_hash(messages: Sequence[Message]) -> str:
    """A short, stable digest of a prompt, so candidates of one prompt can be grouped."""
    payload = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


async def maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


def jsonable(value: Any) -> Any:
    """``value`` if JSON can hold it, else its closest JSON form (tuples become lists, the rest repr)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    return repr(value)
