"""``heatctl check``: validate the config, then reach every configured part."""

from __future__ import annotations

from pathlib import Path

from heatctl.checks import CheckRow, all_checks
from heatctl.config import load_config


def run_check(path: Path) -> int:
    cfg = load_config(path)
    rows = [CheckRow("config", True, f"{path}: {len(cfg.zones)} zone(s), {len(cfg.gpus)} gpu(s)")]
    rows += all_checks(cfg)
    print(format_rows(rows))
    return 0 if all(r.ok for r in rows) else 1


def format_rows(rows: list[CheckRow]) -> str:
    width = max(len(r.part) for r in rows)
    lines = []
    for r in rows:
        mark = "ok  " if r.ok else "FAIL"
        line = f"{mark}  {r.part:<{width}}  {r.detail}"
        if r.fix and not r.ok:
            line += f"\n      {'':<{width}}  fix: {r.fix}"
        lines.append(line)
    return "\n".join(lines)
