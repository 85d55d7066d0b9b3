"""A new graph from agentloop's nodes: IAD plus an LLM critic whose note reaches the next prompt."""

from dataclasses import replace

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agentloop.backends import Message
from agentloop.graphs import LoopContext, LoopGraph, LoopState, nodes

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
    g: LoopGraph = StateGraph(LoopState, context_schema=LoopContext)
    g.add_sequence([nodes.recall, nodes.propose, nodes.verify, critic, nodes.select])
    g.add_node(nodes.refine)
    g.add_node(nodes.remember)
    g.add_edge(START, "recall")
    g.add_conditional_edges("select", nodes.should_continue, {"continue": "refine", "stop": "remember"})
    g.add_edge("refine", "propose")
    g.add_edge("remember", END)
    return g
