"""Requests refused before any view sees them."""

from __future__ import annotations

from collections.abc import Callable

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
