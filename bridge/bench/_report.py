"""Show and save a bench run: a table on the terminal, results.json and bench.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["draw_chart", "plain_number", "print_tables", "write_json"]

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


#: Where the targets, and why a small or busy machine misses some, are explained.
TARGETS_DOC = 'docs/benchmarks.md, "Targets: met, missed, and how steady they are"'
#: A log has no width: the tables there take the room they need, never cut.
LOG_WIDTH = 200


def print_tables(results: dict[str, Any], console: Any = None) -> None:
    """One table per scenario with its targets, every name and figure printed whole.

    On a terminal the tables fit its width by wrapping headers and figures, never by
    cutting them (and never an approach's name); on a pipe or a log they are as wide as
    they need. Either way a missed target says what it means.
    """
    from rich.console import Console  # noqa: PLC0415 - the bench extra

    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=LOG_WIDTH)
    missed = []
    for key, scenario in results.items():
        if key == "meta":
            continue
        console.print(_table(scenario))
        for name, figures in scenario["approaches"].items():
            measured = _extrapolated_from(figures)
            if measured is not None:
                console.print(
                    f"  * {name}: extrapolated, not measured whole: it made {measured} of the "
                    f"{scenario['workload']['calls']} calls and its wall was scaled up",
                    highlight=False,
                )
        for target in scenario["targets"]:
            mark = "[green]met[/]" if target["met"] else "[red]MISSED[/]"
            console.print(
                f"  target {target['name']}: {target['value']} "
                f"({target['kind']} {target['limit']}) {mark}",
                highlight=False,
            )
            if not target["met"]:
                missed.append(f"({key}) {target['name']}")
    if missed:
        console.print(_missed_note(missed), highlight=False)


def _table(scenario: dict[str, Any]) -> Any:
    from rich.table import Table  # noqa: PLC0415 - the bench extra

    table = Table(title=scenario["title"], title_justify="left")
    names = list(scenario["approaches"])
    # The name column never shrinks below its longest name: names are what a reader
    # looks for, and a cut one ("asyncio_gath…") could be either of two approaches.
    table.add_column("approach", no_wrap=True, min_width=max(map(len, names), default=8))
    columns = _columns(scenario)
    for column in columns:
        # Spaces let a narrow terminal wrap a header between words; fold, not "…".
        table.add_column(column.replace("_", " "), justify="right", overflow="fold")
    for name, figures in scenario["approaches"].items():
        cells = [_cell(figures.get(column)) for column in columns]
        if _extrapolated_from(figures) is not None and "wall_s" in columns:
            cells[columns.index("wall_s")] += "*"
        table.add_row(name, *cells)
    return table


def _missed_note(missed: list[str]) -> str:
    return (
        f"MISSED: {'; '.join(missed)}. Each target is a ratio of two figures measured side "
        "by side in this run; the tightest leave little margin, so a small or loaded "
        f"machine (few cores, other jobs running) misses some from run to run. See {TARGETS_DOC}."
    )


# Shown as a note under the table, where they explain themselves, not as columns.
_NOTES = frozenset({"measured_calls", "extrapolated"})


def _columns(scenario: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for figures in scenario["approaches"].values():
        for column, value in figures.items():
            if not isinstance(value, dict) and column not in _NOTES:
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
    labels = [plain_number(v) for v in values]
    for index, name in enumerate(names):
        measured = _extrapolated_from(scenario["approaches"][name])
        if measured is not None:
            # Not measured whole: say so on the bar itself, and hatch it.
            bars[index].set_hatch("//")
            bars[index].set_edgecolor("#444444")
            labels[index] += f"\nextrapolated from {measured} calls"
    axis.bar_label(bars, labels=labels, fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(scenario["unit"])
    axis.set_xlabel("approach")
    axis.set_title(scenario["title"], fontsize=9)
    axis.margins(y=0.15)  # room above the tallest bar for its two-line label


def _extrapolated_from(figures: dict[str, Any]) -> int | None:
    if not figures.get("extrapolated"):
        return None
    return int(figures.get("measured_calls") or 0) or None


def plain_number(value: float) -> str:
    """A bar's label as a reader writes it: ``1,983``, ``73.4``, ``4.12``, ``0.32``; no ``e+03``."""
    size = abs(value)
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}"
