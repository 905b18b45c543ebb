"""The API's pagination: DRF's limit and offset, bounded by what the database can take."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination

# Far beyond any page or table here, and the sum of the two still fits in SQL's 64 bits.
BOUND = 2**31 - 1


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=` and `?offset=` as in DRF, each clamped to BOUND.

    DRF takes any integer, and a LIMIT or OFFSET past 64 bits is a database error: a 500 for
    `?limit=263085656167912329707520` (found by tests/integration/test_fuzz_api.py). Clamping
    changes no answer short of that many rows.
    """

    max_limit = BOUND

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), BOUND)
