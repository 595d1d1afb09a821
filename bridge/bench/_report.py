"""Show and save a bench run: a table on the terminal, results.json and bench.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["draw_chart", "print_tables", "write_json"]

# The figure each scenario's chart shows, per approach, and how to label it.
_FIGURE = {
    "wall s": "wall_s",
    "req/s": "req_per_s",
    "peak RSS MB": "peak_rss_mb",
    "µs per call": "us_per_call",
    "'Event loop is closed' errors": "event_loop_closed",
    "failed calls": "failed",
}


def figure_key(scenario: dict[str, Any]) -> str:
    return _FIGURE.get(scenario["unit"], "wall_s")


def write_json(results: dict[str, Any], out: Path) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return path


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415 - the bench extra
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    for key, scenario in results.items():
        if key == "meta":
            continue
        table = Table(title=scenario["title"], title_justify="left")
        columns = _columns(scenario)
        table.add_column("approach")
        for column in columns:
            table.add_column(column, justify="right")
        for name, figures in scenario["approaches"].items():
            table.add_row(name, *(_cell(figures.get(column)) for column in columns))
        console.print(table)
        for target in scenario["targets"]:
            mark = "[green]met[/]" if target["met"] else "[red]MISSED[/]"
            console.print(
                f"  target {target['name']}: {target['value']} "
                f"({target['kind']} {target['limit']}) {mark}"
            )


def _columns(scenario: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for figures in scenario["approaches"].values():
        for column, value in figures.items():
            if not isinstance(value, dict):
                seen.setdefault(column)
    return list(seen)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def draw_chart(results: dict[str, Any], out: Path) -> Path:
    """Grouped bars, one panel per scenario, each with its own labelled unit."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # no display: the chart only goes to a file
    import matplotlib.pyplot as plt  # noqa: PLC0415

    scenarios = [(key, value) for key, value in results.items() if key != "meta"]
    columns = min(3, len(scenarios))
    rows = -(-len(scenarios) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    for axis in axes.flat[len(scenarios) :]:
        axis.set_visible(False)
    for axis, (key, scenario) in zip(axes.flat, scenarios, strict=False):
        _panel(axis, key, scenario)
    fig.suptitle(results["meta"]["title"], fontsize=13)
    fig.tight_layout()
    path = out / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel(axis: Any, key: str, scenario: dict[str, Any]) -> None:
    figure = figure_key(scenario)
    names = list(scenario["approaches"])
    values = [float(scenario["approaches"][name].get(figure) or 0) for name in names]
    colours = ["#2a9d8f" if name.startswith("bridge") else "#8d99ae" for name in names]
    bars = axis.bar(range(len(names)), values, color=colours)
    axis.bar_label(bars, labels=[f"{v:,.3g}" for v in values], fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(scenario["unit"])
    axis.set_xlabel("approach")
    axis.set_title(scenario["title"], fontsize=9)
