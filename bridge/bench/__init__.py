"""Benchmarks that compare the bridge with the other ways to call async code from sync code."""

__all__ = ["BENCH_MODULES"]

#: What the bench extra installs that the bench imports: the approaches it compares, the
#: clients, its table and its chart. Each command checks them first, to name the extra.
BENCH_MODULES = (
    "aiohttp", "anyio", "asgiref", "httpx2", "matplotlib", "openai", "rich", "tenacity",
)  # fmt: skip
