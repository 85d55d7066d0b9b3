"""Deprecated alias of :mod:`agentloop.records.store`: the old path works for one release, with a warning."""

from agentloop.evals import redirect

redirect(__name__)
