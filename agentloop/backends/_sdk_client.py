"""Plumbing shared by the backends that speak HTTP through an official SDK (OpenAI, Anthropic)."""

from __future__ import annotations

import abc
import asyncio
from typing import Any

from agentloop.types import Backend

__all__ = ["SDKClientBackend"]


class SDKClientBackend(Backend):
    """Holds one SDK client and one concurrency semaphore per event loop.

    Connection pools and semaphores belong to the loop that made them, and
    ``generate_sync`` may run on a different loop than async callers, so both are
    rebuilt when the running loop changes.
    """

    _client_kwargs: dict[str, Any]
    _concurrency: int
    _loop: asyncio.AbstractEventLoop | None = None
    _client: Any = None
    _sem: asyncio.Semaphore | None = None

    @abc.abstractmethod
    def _sdk_module(self) -> Any:
        """The imported SDK (``openai`` or ``anthropic``)."""

    @abc.abstractmethod
    def _sdk_client_class(self) -> Any:
        """The SDK's async client class."""

    def _new_client(self) -> Any:
        kwargs = dict(self._client_kwargs)
        if kwargs.get("http_client") is None:
            # The SDK's own wrapper closes itself in __del__ by scheduling a task on
            # whatever loop is running then, which fails noisily for a client left
            # behind by an earlier loop; the plain default client just gets collected.
            kwargs["http_client"] = self._sdk_module().DefaultAsyncHttpxClient()
        return self._sdk_client_class()(**kwargs)

    def _state(self) -> tuple[Any, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._sem is None:
            self._client = self._new_client()
            self._sem = asyncio.Semaphore(self._concurrency)
            self._loop = loop
        return self._client, self._sem

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()
