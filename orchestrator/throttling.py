"""Request rate limits for the API and the unauthenticated entry points (README.md, Throttling).

The rates are read from settings on every request, not when a class is defined as DRF's own
throttles do, so `override_settings` and a changed FURROW dict take effect at once. The counts
live in Django's cache (settings.CACHES): in the process's memory on the embedded default, in
Redis when REDIS_URL is set, so that every web process shares them.

Each client gets a fixed window per period: `1200/min` allows 1,200 requests in each calendar
minute (a burst across the boundary may see up to twice that in 60 seconds). One atomic
increment per request, so many processes count right, and the cost does not grow with the rate.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from rest_framework.throttling import BaseThrottle

from orchestrator.env import parse_rate


def rate(name: str) -> tuple[int, int] | None:
    """FURROW["THROTTLE_<NAME>"] as (requests, seconds), or None when it is "off"."""
    return parse_rate(settings.FURROW[f"THROTTLE_{name.upper()}"])


def hit(key: str, limit: tuple[int, int] | None, now: float | None = None) -> float | None:
    """Count one request against `key`; the seconds to wait if it is over `limit`, else None."""
    if limit is None:
        return None
    count, period = limit
    now = time.time() if now is None else now
    window = int(now // period)
    # Hashed: a slug or a forwarded address may hold anything, and a cache key may not.
    digest = hashlib.blake2b(key.encode(errors="surrogatepass"), digest_size=16).hexdigest()
    cache_key = f"throttle:{digest}:{window}"
    cache.add(cache_key, 0, timeout=period + 1)
    try:
        used = cache.incr(cache_key)
    except ValueError:  # expired between add() and incr()
        cache.set(cache_key, 1, timeout=period + 1)
        used = 1
    if used <= count:
        return None
    return (window + 1) * period - now


def client_ip(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or the X-Forwarded-For entry that
    REST_FRAMEWORK["NUM_PROXIES"] trusted proxies added (FURROW_NUM_PROXIES)."""
    return BaseThrottle().get_ident(request) or "unknown"


def too_many(wait: float) -> JsonResponse:
    """429 for a plain Django view, as the API's exception handler answers a throttled request."""
    seconds = max(1, math.ceil(wait))
    response = JsonResponse(
        {"message": f"Request was throttled. Expected available in {seconds} seconds."},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


def check(request: HttpRequest, scope: str, ident: str, name: str = "anon") -> JsonResponse | None:
    """For plain Django views: a 429 response when this request is over the `name` rate for
    `ident` within `scope`, else None (and the request is counted)."""
    wait = hit(f"{scope}:{ident}", rate(name))
    return None if wait is None else too_many(wait)


class _Throttle(BaseThrottle):
    rate_name = ""

    def __init__(self) -> None:
        self._wait: float | None = None

    def key(self, request: Any, view: Any) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        key = self.key(request, view)
        if key is None:
            return True
        self._wait = hit(key, rate(self.rate_name))
        return self._wait is None

    def wait(self) -> float | None:
        return None if self._wait is None else max(1.0, math.ceil(self._wait))


class UserThrottle(_Throttle):
    """FURROW_THROTTLE_USER per authenticated user (token or session alike)."""

    rate_name = "user"

    def key(self, request: Any, view: Any) -> str | None:
        user = request.user
        return f"user:{user.pk}" if user and user.is_authenticated else None


class AnonThrottle(_Throttle):
    """FURROW_THROTTLE_ANON per client address, for requests without a user."""

    rate_name = "anon"

    def key(self, request: Any, view: Any) -> str | None:
        user = request.user
        if user and user.is_authenticated:
            return None
        return f"anon:{client_ip(request)}"


class CallbackThrottle(_Throttle):
    """Callbacks (`POST /api/v1/callbacks/{token}`) per client address, at the anon rate: the
    token is the credential, so this is what stops a stranger guessing tokens."""

    rate_name = "anon"

    def key(self, request: Any, view: Any) -> str | None:
        return f"callback:{client_ip(request)}"
