"""The adaptive graph: geometric waves up to the cap, early stop, and the refine-or-resample switch."""

from __future__ import annotations

import pytest

from agentloop.backends import FunctionBackend
from agentloop.graphs import GRAPHS, Candidate, LoopConfig, PromptTask, Verdict, run_task_sync
from agentloop.graphs.adaptive import flat_waves, geometric_waves, informative, waves_config
from agentloop.types import ChatRequest

PROMPT = "What is six times seven? Answer with a number."


class Model:
    """Answers from a queue (one text per candidate), and records each request's size and prompt."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.sizes: list[int] = []
        self.prompts: list[str] = []
        self.temperatures: list[float] = []

    def __call__(self, request: ChatRequest) -> list[str]:
        self.sizes.append(request.n)
        self.temperatures.append(request.temperature)
        self.prompts.append(request.messages[-1].content)
        out = [self.answers.pop(0) if self.answers else "0" for _ in range(request.n)]
        return out


def task(*, feedback: str = "", partial: bool = False) -> PromptTask:
    def verify(c: Candidate) -> Verdict:
        ok = c.answer == 42
        score = 1.0 if ok else (0.5 if partial and c.answer == 41 else 0.0)
        return Verdict(score, passed=ok, feedback="" if ok else feedback)

    return PromptTask(PROMPT, verify, id="t", parse=lambda text: int(text.strip()))


def run(graph: str, model: Model, t: PromptTask, **cfg: object) -> object:
    config = LoopConfig(**{"n": 8, "temperature": 0.7, **cfg})  # type: ignore[arg-type]
    return run_task_sync(t, FunctionBackend(model), graph, config=config)


def test_waves_grow_geometrically_up_to_the_cap() -> None:
    assert geometric_waves(8) == (1, 2, 4, 1)
    assert geometric_waves(7) == (1, 2, 4)
    assert geometric_waves(1) == (1,)
    assert geometric_waves(10, first=2) == (2, 4, 4)
    assert flat_waves(3) == (1, 1, 1)
    cfg = waves_config(LoopConfig(n=8, rounds=2))
    assert (cfg.n_schedule, cfg.rounds, cfg.n) == ((1, 2, 4, 1), 4, 8)
    given = waves_config(LoopConfig(n=8, n_schedule=(2, 4)))
    assert (given.n_schedule, given.rounds, given.n) == ((2, 4), 2, 6)


def test_a_first_wave_of_one_is_greedy_and_the_rest_sample() -> None:
    model = Model([])
    run("adaptive", model, task())
    assert model.temperatures == [0.0, 0.7, 0.7, 0.7]
    flat = Model([])
    run("adaptive_flat", flat, task(), n=3)
    assert flat.temperatures == [0.0, 0.7, 0.7]
    # A first wave of two samples both (two greedy candidates would be one candidate twice).
    two = Model([])
    run("adaptive", two, task(), n_schedule=(2, 4))
    assert two.temperatures == [0.7, 0.7]
    assert waves_config(LoopConfig(n=8)).temperature_for(0) == 0.0
    assert waves_config(LoopConfig(n=8)).temperature_for(1) == 0.7
    with pytest.raises(ValueError, match="first_temperature"):
        LoopConfig(first_temperature=3.0)


def test_registered_with_its_ablations() -> None:
    assert {"adaptive", "adaptive_sample", "adaptive_flat"} <= set(GRAPHS)


def test_a_task_that_never_passes_spends_the_whole_cap_in_growing_waves() -> None:
    model = Model([])
    result = run("adaptive", model, task())
    assert model.sizes == [1, 2, 4, 1]
    assert len(result.candidates) == 8  # type: ignore[attr-defined]
    assert result.stop_reason == "max_rounds"  # type: ignore[attr-defined]


@pytest.mark.parametrize("graph", ["adaptive", "adaptive_sample"])
def test_stops_as_soon_as_a_candidate_passes(graph: str) -> None:
    model = Model(["1", "2", "42", "5"])  # the third candidate (in the second wave) passes
    result = run(graph, model, task())
    assert model.sizes == [1, 2]
    assert result.passed and result.stop_reason == "threshold"  # type: ignore[attr-defined]
    assert len(result.candidates) == 3  # type: ignore[attr-defined]


def test_a_first_candidate_that_passes_costs_one() -> None:
    model = Model(["42"])
    result = run("adaptive", model, task())
    assert model.sizes == [1] and len(result.candidates) == 1  # type: ignore[attr-defined]


def test_threshold_stops_on_partial_credit() -> None:
    model = Model(["1", "41"])
    result = run("adaptive", model, task(partial=True), threshold=0.5)
    assert model.sizes == [1, 2]
    assert result.score == 0.5 and result.stop_reason == "threshold"  # type: ignore[attr-defined]


def test_refines_after_an_informative_wave_and_resamples_otherwise() -> None:
    # A verifier message makes the wave informative: adaptive's second wave is a refine prompt.
    told = Model(["1", "2", "3"])
    run("adaptive", told, task(feedback="1 is not six times seven"), n=3)
    assert told.sizes == [1, 2]
    assert told.prompts[0] == PROMPT and told.prompts[1] != PROMPT
    # Without refinement (the ablation), the same waves sample the prompt afresh.
    fresh = Model(["1", "2", "3"])
    run("adaptive_sample", fresh, task(feedback="1 is not six times seven"), n=3)
    assert fresh.prompts == [PROMPT, PROMPT]
    # All-or-nothing verdicts with no message are not informative: adaptive resamples too.
    silent = Model(["1", "2", "3"])
    run("adaptive", silent, task(), n=3)
    assert silent.prompts == [PROMPT, PROMPT]


def test_partial_credit_is_informative() -> None:
    model = Model(["41", "2", "3"])
    run("adaptive", model, task(partial=True), n=3)
    assert model.prompts[1] != PROMPT
    assert not informative([])


def test_flat_ablation_keeps_waves_at_one() -> None:
    model = Model([])
    run("adaptive_flat", model, task(), n=4)
    assert model.sizes == [1, 1, 1, 1]
