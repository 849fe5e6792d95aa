"""The monitor's own error tree (the Novita API's errors live in ``monitor.novita.errors``).

MonitorError
├── UserError            bad input from the user: exit status 2, one clear message
│   ├── ConfigError      configuration file: each problem names file, line and key
│   └── RuleError        rule files: each problem names file, line, rule and field
└── RuntimeFailure       something went wrong while running: exit status 1
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file the user wrote."""

    file: str
    line: int | None
    message: str
    rule: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule}")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class MonitorError(Exception):
    exit_code = 1


class UserError(MonitorError):
    exit_code = 2

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)

    def __str__(self) -> str:
        head = self.args[0] if self.args else ""
        if not self.problems:
            return str(head)
        lines = [str(p) for p in self.problems]
        return "\n".join([head, *lines]) if head else "\n".join(lines)


class ConfigError(UserError):
    pass


class RuleError(UserError):
    pass


class RuntimeFailure(MonitorError):
    exit_code = 1
