"""What a user installs: the wheel and the sdist build, the wheel installs into a clean venv, and the demo runs."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from heatctl import __version__
from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_version_matches_the_package_and_the_changelog() -> None:
    assert importlib.metadata.version("heatctl") == __version__
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_wheel_installs_into_a_clean_venv_and_the_demo_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next(dist.glob("heatctl-*.whl"))
    assert next(dist.glob("heatctl-*.tar.gz"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    heatctl = str(venv / "bin" / "heatctl")
    version = subprocess.run([heatctl, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"heatctl {__version__}"
    demo = subprocess.run(
        [heatctl, "demo", "--duration", "8", "--speed", "600", "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the installed package alone
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert " kWh " in demo.stdout and "demand" in demo.stdout  # the status line a newcomer watches
    assert "stopped; GPU limit restored" in demo.stderr
