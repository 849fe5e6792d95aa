"""The rule language, the rule engine and the alert lifecycle.

Public surface (what the rest of the daemon calls):

- :func:`load_rules` (files or folders -> :class:`RuleSet`, raises ``RuleError`` listing every
  problem) and :func:`rule_schema` (JSON Schema of rule files);
- :func:`evaluate` (rules x :class:`Facts` x now x states x silences -> :class:`EvalResult`);
- :class:`Facts` (the query interface the store implements) and :class:`InMemoryFacts`;
- :func:`run_rule_tests` (YAML rule unit tests).

Nothing here imports database, HTTP, scheduler or apprise code.
"""

from monitor.rules.engine import BUILTIN_MONITOR_RULE, EvalResult, evaluate
from monitor.rules.facts import (
    COLLECTORS,
    SERIES,
    BalanceFact,
    Facts,
    GpuAgg,
    InMemoryFacts,
    InstanceFact,
    TaskFact,
    WindowAgg,
)
from monitor.rules.lifecycle import AlertState, Notification, Silence, Transition, fingerprint
from monitor.rules.loader import load_rules
from monitor.rules.model import Rule, RuleSet
from monitor.rules.schema import rule_schema
from monitor.rules.testing import TestResult, run_rule_tests

__all__ = [
    "BUILTIN_MONITOR_RULE",
    "COLLECTORS",
    "SERIES",
    "AlertState",
    "BalanceFact",
    "EvalResult",
    "Facts",
    "GpuAgg",
    "InMemoryFacts",
    "InstanceFact",
    "Notification",
    "Rule",
    "RuleSet",
    "Silence",
    "TaskFact",
    "TestResult",
    "Transition",
    "WindowAgg",
    "evaluate",
    "fingerprint",
    "load_rules",
    "rule_schema",
    "run_rule_tests",
]
