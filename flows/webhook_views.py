"""`POST /hooks/{slug}`: a webhook delivery starts a run. No session or token: the trigger's own
HMAC signature or secret token is the credential (flows/triggers.py verifies it).

Deliveries are counted per slug and client address at FURROW_THROTTLE_ANON (429 over it), and a
body over the limit was refused with a 413 before this view (orchestrator.middleware)."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from flows import triggers
from flows.language.errors import DefinitionError
from orchestrator import throttling


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, slug: str) -> JsonResponse:
    throttled = throttling.check(request, "webhook", f"{slug}:{throttling.client_ip(request)}")
    if throttled is not None:
        return throttled
    try:
        body = request.body
    except RequestDataTooBig:
        return JsonResponse({"message": "request body is too large"}, status=413)
    try:
        run = triggers.receive_webhook(slug, body, request.headers)
    except triggers.WebhookError as exc:
        return JsonResponse({"message": str(exc)}, status=exc.status)
    except DefinitionError as exc:  # the mapped input does not fit the workflow's input schema
        errors = [{"path": p.path, "message": p.message} for p in exc.problems]
        return JsonResponse(
            {"message": f"invalid run input: {exc.summary()}", "errors": errors}, status=400
        )
    created = getattr(run, "created", True)
    return JsonResponse({"run": str(run.pk), "status": run.status, "created": created}, status=202)
