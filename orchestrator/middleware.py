"""Requests refused before any view sees them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class RefuseNulInPath:
    """A NUL character in the path is a 400: PostgreSQL cannot hold one in text, so a lookup by a
    name carrying it (`/api/v1/workflows/a%00b`) would otherwise fail as a server error."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path:
            return JsonResponse(
                {"message": "the path must not contain a NUL character"}, status=400
            )
        return self.get_response(request)


def body_limit() -> int | None:
    """The most bytes a request body may have (FURROW_MAX_BODY_BYTES), or None for no limit."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large(limit: int) -> JsonResponse:
    return JsonResponse(
        {"message": f"request body is larger than the limit of {limit:,} bytes"}, status=413
    )


class LimitRequestBody:
    """A body over the limit is a 413 before any view or parser reads it, for every endpoint.

    Django checks the limit only when something reads `request.body` or a form, and DRF's
    parsers read the stream themselves; a body sent without Content-Length (chunked transfer
    encoding, which daphne accepts) escaped both, and DRF took it for no body at all. Such a
    body is read here up to the limit, and handed on with its length as if it had been given.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = body_limit()
        if limit is not None:
            refused = self._refuse(request, limit)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _refuse(self, request: HttpRequest, limit: int) -> HttpResponse | None:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.strip():
            try:
                length = int(declared)
            except ValueError:
                return JsonResponse({"message": "Content-Length is not a number"}, status=400)
            return too_large(limit) if length > limit else None
        if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
            return None
        data = request.read(limit + 1)
        if len(data) > limit:
            return too_large(limit)
        request._body = data  # what `request.body` answers from now on
        request.META["CONTENT_LENGTH"] = str(len(data))  # so that DRF parses it
        return None
