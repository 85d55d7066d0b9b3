"""Deprecated alias of :mod:`agentloop.suites.webshop.task`: the old path works for one release, with a warning."""

from agentloop.evals import redirect

redirect(__name__)
