"""The fault matrix of benchmarks/faults.py, run as a test: every cell must pass, and the table is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.faults import FAULTS, format_table, run_matrix
from tests.services import TinyLLM

pytestmark = pytest.mark.integration


def test_every_fault_with_every_workload(
    fakenvml_lib: Path, tinyllm: TinyLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKENVML_DIR", "")  # each cell sets its own; restored afterwards
    cells = run_matrix(("process", "openai", "none"), fakenvml_lib / "libnvidia-ml.so.1", tinyllm.url)
    table = format_table(cells)
    with capsys.disabled():
        print("\n" + table)
    assert len(cells) == 3 * len(FAULTS) * 2
    assert [c for c in cells if not c.ok] == [], table
    # The cells that matter most, spelled out: a lost GPU stops a pausable workload at once.
    lost = [c for c in cells if c.fault == "gpu lost" and c.workload in ("process", "openai")]
    assert all(c.stop_ticks == 0 and "GPU lost" in c.state for c in lost)
    assert all(c.limit_back_ticks == 1 for c in cells if c.fault == "limit reset")
