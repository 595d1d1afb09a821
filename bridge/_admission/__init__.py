"""Layer 2, admission control for LLM endpoints: limits, retries, and the clients.

Every request of a bridge client passes an httpx2 transport (``_transport``) that asks the
endpoint's controller (``_controller``) for admission: a window of requests in flight and
token buckets for requests and tokens, with limits configured (``_limits``), learned from
headers read as untrusted input (``_headers``), or found from 429s (``_discovery``), and
tokens charged as each provider charges them (``_tokens``). ``_redis`` shares the buckets
between processes; ``_stats`` counts; ``_clients`` and ``_preload`` make the SDK clients.
A request made on a loop that is not a bridge's hops to the default bridge's (``_hop``);
the SDKs' own retries are never sent on top of the bridge's (``_sdk_retries``).
It uses the loop layer (``bridge._core``) and never the integrations above it.
"""

from __future__ import annotations

from ._clients import anthropic, http_client, openai, wrap
from ._controller import all_stats as stats
from ._limits import LEARN, Limits, Retry
from ._stats import EndpointStats

__all__ = [
    "LEARN",
    "EndpointStats",
    "Limits",
    "Retry",
    "anthropic",
    "http_client",
    "openai",
    "stats",
    "wrap",
]
