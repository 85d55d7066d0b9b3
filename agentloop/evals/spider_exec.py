"""Deprecated alias of :mod:`agentloop.suites.text2sql.execution`: the old path works for one release, with a warning."""

from agentloop.evals import redirect

redirect(__name__)
