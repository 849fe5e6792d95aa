"""The command line is one package (``monitor/cli``): one module per command group, no import
cycle, nothing below it imports it, every command built through ``monitor.app``, and the
``console`` channel named in one place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest

import monitor.cli
from monitor.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "monitor"
CLI = PKG / "cli"
MODULES = sorted(p.stem for p in CLI.glob("*.py") if p.stem != "__init__")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level and inside functions), absolute names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _names(path: Path) -> set[str]:
    return {
        n.id if isinstance(n, ast.Name) else n.attr
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(n, ast.Name | ast.Attribute)
    }


@pytest.mark.parametrize("name", ["__init__", *MODULES])
def test_each_module_imports_alone(name: str) -> None:
    module = "monitor.cli" if name == "__init__" else f"monitor.cli.{name}"
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_command_modules_import_only_common_of_the_package() -> None:
    """The package imports its command modules; they import ``monitor.cli.common`` and nothing
    else of the package: no cycle, whatever order they load in."""
    for name in MODULES:
        ours = {m for m in _imports(CLI / f"{name}.py") if m.startswith("monitor.cli")}
        if name == "common":
            assert ours == set(), f"common imports {ours}"
            continue
        others = {m for m in ours if m.partition("monitor.cli.common")[0] != ""}
        others |= {m for m in ours if m == "monitor.cli"}
        assert others == set(), f"monitor/cli/{name}.py imports {others}"


def test_nothing_below_the_cli_imports_it() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        if CLI in path.parents or path == PKG / "__main__.py":
            continue
        if any(m == "monitor.cli" or m.startswith("monitor.cli.") for m in _imports(path)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    assert not (PKG / "cli.py").exists()
    assert not list(PKG.glob("cli_*.py"))


def test_commands_are_built_through_the_composition_root() -> None:
    """No command opens the store, builds a client or a notifier, or loads the configuration
    itself: ``monitor.app`` does (``open_database``, ``App.open``, ``notifier_for_test``,
    ``load_config``)."""
    forbidden_modules = ("monitor.store.db", "monitor.novita", "monitor.notify.deliver")
    forbidden_names = {"open_store", "Notifier", "NovitaClient", "Channel", "build_router"}
    for path in CLI.glob("*.py"):
        imports = _imports(path)
        bad = [m for m in imports if m.startswith(forbidden_modules)]
        assert bad == [], f"{path.name} imports {bad}"
        used = _names(path) & forbidden_names
        assert used == set(), f"{path.name} uses {used}"
        assert "Config.load" not in path.read_text(encoding="utf-8")


def test_every_command_module_is_registered_once() -> None:
    registered = set(cli.commands)
    listed: list[str] = []
    for name in MODULES:
        if name == "common":
            continue
        module = getattr(monitor.cli, name)
        listed += [c.name for c in module.COMMANDS if c.name]
    assert sorted(listed) == sorted(registered)
    assert len(listed) == len(set(listed))
    assert isinstance(cli.commands["bench"], click.Group)
    assert set(cli.commands["bench"].commands) >= {"collect", "rules"}  # type: ignore[attr-defined]


def test_console_channel_is_named_once() -> None:
    """The channel name ``console`` is a literal only where it is defined
    (``monitor.config.CONSOLE_CHANNEL``); the other literals are the log format's."""
    holders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Constant) and n.value == "console" for n in ast.walk(tree)):
            holders.append(path)
    assert set(holders) == {PKG / "config.py", PKG / "logs.py", CLI / "run.py", CLI / "demo.py"}
    config = (PKG / "config.py").read_text(encoding="utf-8")
    assert config.count('"console"') == 2  # CONSOLE_CHANNEL and the log format's Literal
    assert 'CONSOLE_CHANNEL = "console"' in config
    run = (CLI / "run.py").read_text(encoding="utf-8")
    assert run.count('"console"') == 1 and 'setup_logs(config, "console"' in run  # log format
    demo = (CLI / "demo.py").read_text(encoding="utf-8")
    assert demo.count('"console"') == 1 and 'configure_logging("console"' in demo  # log format


def test_entry_point_is_main() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'novita-monitor = "monitor.cli:main"' in text
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "--version"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "novita-monitor" in done.stdout
