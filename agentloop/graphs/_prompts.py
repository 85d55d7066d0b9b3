"""Where the prompt loader used to live: it is :mod:`agentloop.prompts` now.

Kept for modules not yet moved over (``evals/text2sql_task.py``).
"""

from agentloop.prompts import load_prompt, render_prompt

__all__ = ["load_prompt", "render_prompt"]
