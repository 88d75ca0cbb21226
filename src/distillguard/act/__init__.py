"""Stage 7 — act: turn a score into an enforcement action with a versioned policy.

A policy is YAML data (``data/policies/default.yaml``) loaded into frozen dataclasses by
:func:`load_policy`; :func:`decide` maps one account's score, verdict, reasons, tier and
cluster to an :class:`Decision` (action, rate, rule, policy id and version). Every decision
serialises to one JSON line (:meth:`Decision.to_json`).
"""

from .policy import (
    ACTIONS, Action, AllowEntry, Decision, Issue, Policy, Rule, decide, lint_policy,
    load_policy,
)

__all__ = ["ACTIONS", "Action", "AllowEntry", "Decision", "Issue", "Policy", "Rule", "decide",
           "lint_policy", "load_policy"]
