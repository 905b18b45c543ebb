"""Request body parsers that refuse hostile bodies with a clear 400 instead of a 500."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.http import parse_header_parameters
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from flows.language.errors import DefinitionError
from flows.language.parse import load_document


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def _read(stream: Any) -> bytes:
    """The body, at most the limit. orchestrator.middleware.LimitRequestBody has already refused
    a longer one; this holds for a request that reaches a parser some other way."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return stream.read() if stream is not None else b""
    data = stream.read(limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise BodyTooLarge(f"request body is larger than the limit of {limit:,} bytes")
    return data


def _parse(stream: Any, fmt: str, *, allow_nul: bool = False) -> Any:
    data = _read(stream)
    try:
        doc = load_document(data, fmt=fmt)
    except DefinitionError as exc:
        raise ParseError(f"request body: {exc}") from None
    if not allow_nul:
        _refuse_nul(doc)
    return doc


def _refuse_nul(doc: Any) -> None:
    """PostgreSQL stores no NUL character in text or jsonb: one would be a 500 further on."""
    if isinstance(doc, str):
        if "\x00" in doc:
            raise ParseError("request body: text may not contain a NUL character (\\u0000)")
    elif isinstance(doc, dict):
        for key, value in doc.items():
            _refuse_nul(key)
            _refuse_nul(value)
    elif isinstance(doc, list):
        for item in doc:
            _refuse_nul(item)


class SafeJSONParser(BaseParser):
    media_type = "application/json"
    allow_nul = False
    """A view whose code replaces NULs itself (log ingestion) may take them."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return _parse(stream, "json", allow_nul=self.allow_nul)


class YAMLParser(BaseParser):
    """`Content-Type: application/yaml`."""

    media_type = "application/yaml"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = _read(stream)
        try:
            doc = load_document(data, fmt="yaml")
        except DefinitionError as exc:
            raise ParseError(f"request body: {exc}") from None
        _refuse_nul(doc)
        request = (parser_context or {}).get("request")
        if request is not None:
            # The text as the user wrote it (comments included) is kept with the version.
            request.raw_yaml = data.decode("utf-8")
        return doc


class TextYAMLParser(YAMLParser):
    media_type = "text/yaml"


class XYAMLParser(YAMLParser):
    media_type = "application/x-yaml"


class PlainTextParser(BaseParser):
    """`Content-Type: text/plain`: the body as a str, decoded with its `charset` (UTF-8 if none).

    Bytes that are invalid in that charset become U+FFFD instead of failing the request; a charset
    Python does not know is a 400. Only views that ask for it use this parser (log ingestion).
    """

    media_type = "text/plain"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> str:
        data = _read(stream)
        _, params = parse_header_parameters(media_type or self.media_type)
        charset = params.get("charset", "").strip() or "utf-8"
        try:
            return data.decode(charset, errors="replace")
        except LookupError:  # unknown, or not a text encoding (base64, rot13)
            raise ParseError(f"request body: unknown charset {charset!r}") from None
        except UnicodeError:  # a codec without the "replace" handler (idna)
            raise ParseError(f"request body: cannot decode it as {charset!r}") from None
