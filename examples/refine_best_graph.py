"""A two-stage graph from agentloop's parts: sample n candidates, then revise the best of them once."""

from agentloop.graphs import GraphSpec, loop_graph, nodes

refine_best = GraphSpec(
    "refine_best",
    "n candidates, then one revision of the best of them",
    build=lambda memory: loop_graph(feedback=nodes.revise, memory=memory),
    adjust=lambda cfg: cfg.replace(rounds=2, n_schedule=(cfg.n_for(0), 1)),
)
