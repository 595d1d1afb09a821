"""The report at the end of a run: what this run did, and where the whole file stands."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

import bridge
from bridge._integration import RunCounts, Status

from ._send import Tokens

__all__ = ["Prices", "Tally", "report"]


@dataclass
class Tally:
    """The latest outcome of every output line: the whole journal's state."""

    lines: int = 0
    statuses: Counter[Status] = field(default_factory=Counter)
    #: Final failures by HTTP status, or by error code ("invalid_request", ...).
    final_causes: Counter[str] = field(default_factory=Counter)
    tokens: Tokens = field(default_factory=Tokens)

    def add(self, line: dict[str, Any], status: Status) -> None:
        self.lines += 1
        self.statuses[status] += 1
        response = line["response"] or {}
        if status == "final":
            cause = response.get("status_code") or (line["error"] or {}).get("code")
            self.final_causes[str(cause)] += 1
        if status == "ok":
            self.tokens.add(response.get("body"))

    @property
    def failed(self) -> int:
        return self.statuses["retryable"] + self.statuses["final"]


@dataclass(frozen=True)
class Prices:
    """Per 1M tokens, as the user gave them (never guessed)."""

    input: float
    output: float

    def cost(self, tokens: Tokens) -> float:
        return (tokens.input * self.input + tokens.output * self.output) / 1_000_000


def report(
    tally: Tally,
    counts: RunCounts,
    *,
    sent: int,
    tokens: Tokens,
    prices: Prices | None,
    out: TextIO,
    traffic: tuple[int, int] | None = None,
) -> None:
    """Print what this run did, where every line stands now, and the tokens.

    ``sent`` and ``tokens`` are this run's requests and their tokens; ``traffic`` the
    429s and client retries, by default this process's (``bridge.stats()``).
    """
    limited, retries = _traffic() if traffic is None else traffic
    traffic_text = f"{limited:,} 429s, {retries:,} attempts retried by the client"
    print(f"this run: {_this_run(counts, sent)}; {traffic_text}", file=out)
    print(f"all {tally.lines:,} lines now: {_outcomes(tally)}", file=out)
    print(_tokens(tally, tokens, prices), file=out)


def _this_run(counts: RunCounts, sent: int) -> str:
    if counts.run == 0:
        return "nothing left to send (every line has a final outcome in the journal)"
    again = f" ({counts.rerun:,} of them again, after a failure last time)" if counts.rerun else ""
    return f"sent {sent:,}{again}, {counts.replayed:,} resumed from the journal"


def _outcomes(tally: Tally) -> str:
    parts = [f"{tally.statuses['ok']:,} ok"]
    if tally.statuses["retryable"]:
        parts.append(f"{tally.statuses['retryable']:,} failed retryably (a rerun sends them again)")
    if tally.statuses["final"]:
        causes = ", ".join(f"{cause}: {n:,}" for cause, n in tally.final_causes.most_common())
        parts.append(
            f"{tally.statuses['final']:,} failed finally ({causes}; sent again only with "
            "--retry-failed)"
        )
    return ", ".join(parts)


def _traffic() -> tuple[int, int]:
    stats = list(bridge.stats().values())
    return sum(s.rate_limited for s in stats), sum(s.retries for s in stats)


def _tokens(tally: Tally, run: Tokens, prices: Prices | None) -> str:
    whole = tally.tokens
    text = (
        f"tokens this run: in {run.input:,}, out {run.output:,}; "
        f"whole journal: in {whole.input:,}, out {whole.output:,}"
    )
    if prices is not None:
        text += (
            f"\nestimated cost this run: {prices.cost(run):.4f}; whole journal: "
            f"{prices.cost(whole):.4f} (at the prices you gave per 1M tokens)"
        )
    return text
