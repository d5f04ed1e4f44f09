"""``heatctl report``: what the heat was worth, day by day, from the ledger the node keeps.

Read from ``state_dir/state.json`` (the running service writes it; no InfluxDB needed): per local
day the heat the room wanted and got, what that heat would have cost from the room's own heating,
the electricity and what it cost, the net, the CO2, and the tokens of each model served with
their energy per token. Printed as a table a homeowner reads without a glossary, and drawn.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from heatctl.config import Config
from heatctl.errors import ConfigError
from heatctl.money import MoneyBook, MoneyDay
from heatctl.state import StateFile


def parse_since(text: str) -> int:
    """``30d``, ``2w`` or ``12`` (days) → days."""
    match = re.fullmatch(r"\s*(\d+)\s*([dw]?)\s*", text)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError([f"heatctl report: --since {text!r}: give days like 30d or weeks like 2w"])
    return int(match.group(1)) * (7 if match.group(2) == "w" else 1)


def load_ledger(cfg: Config) -> tuple[MoneyBook, str | None]:
    """The ledger from state.json (its previous copy if damaged), and what was wrong, if anything."""
    state = StateFile(cfg.resolved_state_dir() / "state.json")
    data = state.load()
    counters = data.get("counters") if isinstance(data, dict) else None
    money = counters.get("money") if isinstance(counters, dict) else None
    return MoneyBook.from_json(money or {}), state.problem


def period(book: MoneyBook, today: date, days: int) -> list[tuple[str, MoneyDay]]:
    start = (today - timedelta(days=days - 1)).isoformat()
    return [(d, m) for d, m in sorted(book.days.items()) if d >= start]


def report_text(rows: list[tuple[str, MoneyDay]], currency: str) -> str:
    if not rows:
        return "nothing recorded yet: heatctl run keeps a day-by-day ledger in its state_dir"
    total = MoneyDay()
    for _, day in rows:
        total.merge(day)
    lines = [
        f"{'day':<10} {'heat the room used':>18} {'worth':>9} {'electricity':>12} {'cost':>9} {'net':>9} {'CO2':>8}",
    ]
    for name, day in [*rows, ("in all", total)]:
        d = day.to_json()
        lines.append(
            f"{name:<10} {d['heat_reused_kwh']:>14.2f} kWh {_money(d['heat_value'], currency):>9}"
            f" {d['electricity_kwh']:>8.2f} kWh {_money(d['electricity_cost'], currency):>9}"
            f" {_money(d['net'], currency, signed=True):>9} {_co2(d['co2_g']):>8}"
        )
    models = total.to_json()["models"]
    for model, m in models.items():
        per_token = f"{m['j_per_token']:.3f} J per token" if m["j_per_token"] is not None else "no tokens"
        lines.append(f"{model}: {m['tokens']:,} tokens on {m['kwh']:.2f} kWh, {per_token}")
    if total.unpriced_kwh > 0:
        lines.append(
            f"({total.unpriced_kwh:.2f} kWh were drawn while no electricity price was known: left out of the money)"
        )
    lines.append(
        "heat the room used: made while the room wanted it; worth: what the room's own heating would have"
        " charged for it; net: worth less the electricity's cost"
    )
    return "\n".join(lines)


def _money(value: Any, currency: str, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f} {currency}" if signed else f"{value:.2f} {currency}"


def _co2(grams: Any) -> str:
    if grams is None:
        return "—"
    return f"{grams / 1000:.2f} kg" if grams >= 1000 else f"{grams:.0f} g"


def plot_report(rows: list[tuple[str, MoneyDay]], currency: str, path: Path) -> None:
    """Per day: the heat used and the electricity (bars), the net (a line); tokens per kWh below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [datetime.combine(date.fromisoformat(d), time(12)) for d, _ in rows]  # each bar at its day's noon
    data = [m.to_json() for _, m in rows]
    fig, (ax, ax_t) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 0.38  # of a day: the two bars side by side, each at its day's noon ± 5 h
    ax.bar(
        [d - timedelta(hours=5) for d in days],
        [x["electricity_kwh"] for x in data],
        width,
        label="electricity (kWh)",
        color="tab:gray",
    )
    ax.bar(
        [d + timedelta(hours=5) for d in days],
        [x["heat_reused_kwh"] for x in data],
        width,
        label="heat the room used (kWh)",
        color="tab:orange",
    )
    ax.set_ylabel("kWh a day")
    ax.legend(loc="upper left", fontsize=8)
    if any(x["net"] is not None for x in data):
        ax_m = ax.twinx()
        ax_m.plot(
            days, [x["net"] if x["net"] is not None else float("nan") for x in data], color="tab:green", marker="o"
        )
        ax_m.axhline(0.0, color="tab:green", lw=0.5, ls=":")
        ax_m.set_ylabel(f"net ({currency} a day: heat's worth less electricity)", color="tab:green")
    per_kwh = []
    for x in data:
        tokens = sum(m["tokens"] for m in x["models"].values())
        per_kwh.append(tokens / x["electricity_kwh"] / 1e6 if x["electricity_kwh"] > 0 and tokens else 0.0)
    ax_t.bar(days, per_kwh, 0.6, color="tab:purple")
    ax_t.set_ylabel("million tokens\nper kWh")
    ax.set_title("What the heat was worth, day by day")
    import matplotlib.dates as mdates

    ax_t.xaxis.set_major_locator(mdates.DayLocator())  # type: ignore[no-untyped-call]
    ax_t.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))  # type: ignore[no-untyped-call]
    for a in (ax, ax_t):
        a.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_report(config: Path, since: str, plot_path: Path | None, today: date | None = None) -> int:
    from heatctl.config import load_config

    cfg = load_config(config)
    days = parse_since(since)
    book, problem = load_ledger(cfg)
    if problem:
        print(f"note: {problem}")
    rows = period(book, today or date.today(), days)
    print(report_text(rows, cfg.currency))
    if plot_path is not None:
        if not rows:
            print(f"nothing to draw; {plot_path} not written")
            return 1
        plot_report(rows, cfg.currency, plot_path)
        print(f"wrote {plot_path}")
    return 0
