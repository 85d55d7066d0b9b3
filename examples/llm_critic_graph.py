"""A new graph from agentloop's nodes: IAD plus an LLM critic whose note reaches the next prompt."""

from dataclasses import replace

from langgraph.runtime import Runtime

from agentloop.graphs import LoopContext, LoopGraph, LoopState, loop_graph, nodes
from agentloop.types import Message

CRITIC = "Task:\n{task}\n\nAnswer:\n{answer}\n\nIn one sentence, name this answer's most serious flaw."


async def critic(state: LoopState, runtime: Runtime[LoopContext]) -> dict:
    """Critique the round's best candidate (budgeted, not a candidate) and append it to its verdict."""
    ctx, pending = runtime.context, list(state.get("pending") or [])
    top = nodes.best_of(pending)
    if top is None or top.verdict is None or top.passed:
        return {}
    prompt = CRITIC.format(task=ctx.task.build_messages()[-1].content, answer=top.text)
    note = await ctx.ask([Message("user", prompt)], max_tokens=64)
    if note:
        verdict = replace(top.verdict, feedback=f"{top.verdict.feedback} Critic: {note.strip()}")
        pending[pending.index(top)] = top.with_verdict(verdict, top.verify_s)
    return {"pending": pending}


def critic_graph() -> LoopGraph:
    """IAD with the critic between verify and select: recall → propose → verify → critic → select → refine …"""
    return loop_graph(feedback=nodes.refine, review=[critic])
