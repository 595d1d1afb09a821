"""Shared rate-limit state for ``Limits(store=...)``: every process that uses one endpoint
and key draws from the same RPM/TPM buckets.

Only Redis for now (``redis://``, ``rediss://``, ``unix://``). Importing this package does
not import redis; the store does, when it is first used.
"""

from __future__ import annotations

from ._redis import RedisStore

__all__ = ["RedisStore"]
