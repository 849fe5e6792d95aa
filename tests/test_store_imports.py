"""The store knows its own records, never the wire: nothing under ``monitor/store`` imports the
API client and its payload models, the collectors, the rules or the command line (dependencies
point one way: wire -> collect -> store -> facts -> rules)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "monitor" / "store"
FORBIDDEN = ("monitor.novita", "monitor.collect", "monitor.rules", "monitor.cli")


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (at any depth: lazy
    imports inside functions count), relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    text = path.read_text() if source is None else source
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            out.append((node.lineno, base))
            out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return out


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def test_no_module_under_monitor_store_imports_the_wire_collectors_rules_or_cli() -> None:
    files = sorted(STORE.rglob("*.py"))
    assert len(files) > 10 and STORE / "migrations" / "env.py" in files  # the walk sees them
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in _imports(path)
        if _forbidden(module)
    ]
    assert bad == []


def test_the_import_walk_catches_a_forbidden_import() -> None:
    """The check above can fail: each forbidden form is recognised."""
    probe = STORE / "_probe_for_test.py"  # resolved as a module of monitor.store
    source = (
        "import monitor.novita.models\n"
        "from monitor.collect import convert\n"
        "def f():\n    from ..rules import engine\n"
        "from .. import cli\n"
        "from monitor.store import models\n"
    )
    found = [m for _, m in _imports(probe, source) if _forbidden(m)]
    assert "monitor.novita.models" in found
    assert "monitor.collect" in found
    assert "monitor.rules" in found
    assert "monitor.cli" in found
    assert not any(m.startswith("monitor.store") for m in found)


def test_importing_the_store_loads_none_of_them() -> None:
    """Transitively too: importing every store module (not the alembic environment, which only
    runs under alembic) pulls in none of the forbidden packages."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import monitor.store\n"
        "for m in pkgutil.walk_packages(monitor.store.__path__, 'monitor.store.'):\n"
        "    if not m.name.endswith('.env'):\n"
        "        importlib.import_module(m.name)\n"
        f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""
