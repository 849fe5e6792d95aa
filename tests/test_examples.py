"""The shipped example configurations validate as the README says: ``examples/config.yaml``
with only ``NOVITA_API_KEY`` set, the systemd unit's with its credentials directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def check(config: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(config)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_examples_config_validates_with_only_the_api_key(tmp_path: Path) -> None:
    done = check(ROOT / "examples" / "config.yaml", {"NOVITA_API_KEY": "sk-x"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok: configuration" in done.stdout
    assert "shipped rules are not loaded" not in done.stdout

    missing = check(ROOT / "examples" / "config.yaml", {}, tmp_path)
    assert missing.returncode == 2
    assert "NOVITA_API_KEY is not set" in missing.stderr


def test_the_systemd_config_validates_with_its_credential(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("sk-x\n")
    (tmp_path / "api-key").chmod(0o400)
    done = check(
        ROOT / "systemd" / "config.yaml", {"CREDENTIALS_DIRECTORY": str(tmp_path)}, tmp_path
    )
    assert done.returncode == 0, done.stderr
