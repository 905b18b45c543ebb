"""Retry arithmetic: whether another attempt comes, and after how long."""

from __future__ import annotations

from flows.language.spec import Backoff, RetryPolicy


def retry_delay(policy: RetryPolicy, failed_attempt: int, rand: float) -> float | None:
    """Seconds to wait before the attempt after `failed_attempt` (1-based), or None when the policy
    has no attempts left. `rand` in [0, 1) comes from the caller, so this stays deterministic."""
    if failed_attempt >= policy.max_attempts:
        return None
    if policy.backoff == Backoff.LINEAR:
        delay = policy.delay * failed_attempt
    elif policy.backoff == Backoff.EXPONENTIAL:
        delay = policy.delay * (2 ** (failed_attempt - 1))
    else:
        delay = policy.delay
    if policy.max_delay is not None:
        delay = min(delay, policy.max_delay)
    return delay * (1 - policy.jitter * rand)
