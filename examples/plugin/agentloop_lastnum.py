"""A custom agentloop backend, registered through the ``agentloop.backends`` entry point.

``--backend lastnum`` (or ``lastnum:PREFIX``) answers every request with the last number in
its prompt: a zero-cost baseline, and a backend a test can run without a model.
"""

from __future__ import annotations

import re
import time

from agentloop import Backend, BackendOptions, ChatRequest, ChatResponse, Completion, Usage


class LastNumberBackend(Backend):
    """Answers ``PREFIX`` (default ``Answer:``) followed by the last number of the last message."""

    def __init__(self, prefix: str = "Answer:"):
        self.id = f"lastnum:{prefix}"
        self.prefix = prefix

    @classmethod
    def from_id(cls, arg: str, options: BackendOptions) -> LastNumberBackend:
        """Build it from what follows ``lastnum:`` in ``--backend`` (agentloop calls this)."""
        return cls(arg or "Answer:")

    async def generate(self, request: ChatRequest) -> ChatResponse:
        start = time.perf_counter()
        prompt = request.raw_prompt or request.messages[-1].content
        numbers = re.findall(r"-?\d+", prompt)
        text = f"{self.prefix} {numbers[-1] if numbers else 0}"
        completions = [
            Completion(text, "stop", completion_tokens=len(text.split())) for _ in range(request.n)
        ]
        usage = Usage(
            prompt_tokens=len(prompt.split()),
            completion_tokens=sum(c.completion_tokens for c in completions),
            latency_s=time.perf_counter() - start,
            llm_calls=1,
        )
        return ChatResponse(completions, usage, model=self.id)
