"""IAD feedback in every prompt format of both suites; self-refine's stays a single revision.

For Text2SQL and WebShop, in the chat and the few-shot format, the refine prompt that IAD's
``contrast`` feedback builds holds the best candidate so far and the last round's weakest,
each with its score and the verifier's message. Self-refine's ``revise`` feedback holds
the previous candidate and its message, and nothing of a weaker one.
"""

from __future__ import annotations

import pytest

from agentloop.graphs import Candidate, Feedback, Verdict
from agentloop.graphs.task import Task
from agentloop.suites.text2sql import load_text2sql
from agentloop.suites.text2sql.task import Text2SQLTask
from agentloop.suites.webshop.task import Outcome, WebShopTask
from agentloop.webshop import Purchase, load_catalog

BEST_MSG = "returns 3 rows but the question wants one number"
WORST_MSG = "no such column: nme"


def prompt_text(task: Task, feedback: Feedback) -> str:
    messages = task.build_refine_messages(feedback)
    raw = task.completion_prompt(messages)
    return raw if raw is not None else "\n".join(m.content for m in messages)


def sql_candidates() -> tuple[Candidate, Candidate]:
    best = Candidate(0, 0, "SELECT name FROM singer", "h", answer="SELECT name FROM singer")
    worst = Candidate(0, 1, "SELECT nme FROM singer", "h", answer="SELECT nme FROM singer")
    return (
        best.with_verdict(Verdict(score=0.5, passed=False, feedback=BEST_MSG)),
        worst.with_verdict(Verdict(score=0.0, passed=False, feedback=WORST_MSG)),
    )


def shop_candidates(goal) -> tuple[Candidate, Candidate]:
    bought = Outcome(
        goal.instruction_text,
        actions=[f"search[{goal.name}]", f"click[{goal.asin}]", "click[Buy Now]"],
        ended="purchase",
        purchase=Purchase(
            asin=goal.asin,
            name=goal.name,
            price_tag="$99.0",
            price=99.0,
            options={},
            available_options={},
            bullet_points=(),
            description="",
            attributes=None,
        ),
    )
    lost = Outcome(
        goal.instruction_text, actions=["search[zzz]", "click[Search]", "click[Search]"], ended="stuck"
    )
    best = Candidate(0, 0, "Actions:\n1. search -> results\nOutcome: bought it.", "h", answer=bought)
    worst = Candidate(0, 1, "Actions:\n1. search[zzz] -> no results\nOutcome: no purchase.", "h", answer=lost)
    return (
        best.with_verdict(Verdict(score=0.67, passed=False, feedback="price $99.00 is above the limit")),
        worst.with_verdict(
            Verdict(score=0.0, passed=False, feedback="No purchase: stopped after invalid actions")
        ),
    )


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def cases(catalog):
    goal = catalog.goals[0]
    example = load_text2sql()[0]
    sql_best, sql_worst = sql_candidates()
    shop_best, shop_worst = shop_candidates(goal)
    out = []
    for fmt in ("chat", "fewshot"):
        sql_task = Text2SQLTask(example, prompt_format=fmt)
        # What identifies each candidate in the prompt: its query, or its first action.
        out.append(
            (
                f"text2sql-{fmt}",
                sql_task,
                sql_best,
                sql_worst,
                "SELECT name FROM singer",
                "SELECT nme FROM singer",
            )
        )
        shop_task = WebShopTask(catalog, goal, prompt_format=fmt)
        shop_marks = ("search[", "search[zzz]") if fmt == "chat" else (f"click[{goal.asin}]", "search[zzz]")
        out.append((f"webshop-{fmt}", shop_task, shop_best, shop_worst, *shop_marks))
    return out


@pytest.mark.parametrize("which", ["text2sql-chat", "text2sql-fewshot", "webshop-chat", "webshop-fewshot"])
def test_iad_prompt_holds_best_and_worst_with_scores_and_messages(catalog, which):
    _, task, best, worst, best_mark, worst_mark = next(c for c in cases(catalog) if c[0] == which)
    feedback = Feedback(style="contrast", round=1, best=best, worst=worst, scores=(best.score, worst.score))
    text = prompt_text(task, feedback)
    assert best_mark in text and worst_mark in text
    assert f"{best.score:.2f}" in text and f"{worst.score:.2f}" in text
    assert best.verdict.feedback in text and worst.verdict.feedback in text
    # The best comes first: the model reads what to keep before what to avoid.
    assert text.index(best.verdict.feedback) < text.index(worst.verdict.feedback)


@pytest.mark.parametrize("which", ["text2sql-chat", "text2sql-fewshot", "webshop-chat", "webshop-fewshot"])
def test_self_refine_prompt_holds_the_previous_try_only(catalog, which):
    _, task, best, worst, best_mark, worst_mark = next(c for c in cases(catalog) if c[0] == which)
    text = prompt_text(task, Feedback(style="revise", round=1, best=best, scores=(best.score,)))
    assert best_mark in text and best.verdict.feedback in text and f"{best.score:.2f}" in text
    assert worst_mark not in text and worst.verdict.feedback not in text
    assert "weakest" not in text.lower()


@pytest.mark.parametrize("which", ["text2sql-fewshot", "webshop-fewshot"])
def test_iad_without_a_weaker_candidate_shows_the_best_only(catalog, which):
    _, task, best, worst, best_mark, worst_mark = next(c for c in cases(catalog) if c[0] == which)
    text = prompt_text(task, Feedback(style="contrast", round=1, best=best, scores=(best.score,)))
    assert best_mark in text and best.verdict.feedback in text
    assert worst_mark not in text and "weakest" not in text.lower()
