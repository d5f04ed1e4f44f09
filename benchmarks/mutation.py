"""Mutation score of the control core and the actuation (mutmut; settings in pyproject's [tool.mutmut]).

    .venv/bin/python benchmarks/mutation.py [--survivors FILE]

Runs every mutant from scratch, prints the score, the survivors per function, and writes
each surviving mutant's diff to FILE (default mutation-survivors.txt) for review. Target: at
least 90 % killed.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).with_name("mutmut")
TARGET = 0.90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", type=Path, default=ROOT / "mutation-survivors.txt")
    args = parser.parse_args()
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    started = time.monotonic()
    run = subprocess.run([str(MUTMUT), "run"], cwd=ROOT, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        return 1
    results = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    status = dict(re.findall(r"^\s*(\S+): (\w[\w ]*)$", results, flags=re.MULTILINE))
    counts = collections.Counter(status.values())
    killed, total = counts.get("killed", 0), len(status)
    survivors = sorted(name for name, s in status.items() if s == "survived")
    print(f"mutants: {total}, killed {killed}, survived {len(survivors)}, other {dict(counts)}")
    print(f"score: {killed / max(total, 1):.1%} killed (target {TARGET:.0%}), {time.monotonic() - started:.0f} s")
    by_function = collections.Counter(name.rsplit("__mutmut_", 1)[0] for name in survivors)
    print("\nsurvivors by function:")
    for function, n in by_function.most_common():
        print(f"  {n:3d}  {function.replace('xǁ', '').replace('ǁ', '.')}")
    with args.survivors.open("w", encoding="utf-8") as out:
        for name in survivors:
            show = [str(MUTMUT), "show", name]
            diff = subprocess.run(show, cwd=ROOT, capture_output=True, text=True, check=False).stdout
            changed = [line for line in diff.splitlines() if line.startswith(("- ", "+ "))]
            out.write(f"=== {name}\n" + "\n".join(changed) + "\n")
    print(f"\nwrote every survivor's diff to {args.survivors}")
    return 0 if killed / max(total, 1) >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
