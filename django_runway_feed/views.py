"""The callback endpoint CometAPI POSTs to when a task finishes.

A callback is only a hint: it is not signed, its retries are undocumented, and failures may not
be called back at all (COMETAPI.md, "Callbacks"). So the view checks the URL's signature
(without touching the database), ignores the body, asks for a prompt poll of the task, and
answers at once. Repeated or late callbacks cost at most one poll, never faster than
``POLL_INTERVAL``.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services

# The documented callback body is well under 1 KiB; anything far larger is not CometAPI.
MAX_CALLBACK_BYTES = 64 * 1024


@csrf_exempt
@require_POST
def callback(request: HttpRequest, pk: int, signature: str) -> HttpResponse:
    if not constant_time_compare(signature, services.callback_signature(pk)):
        raise Http404
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > MAX_CALLBACK_BYTES:
        return HttpResponse("Callback body too large.", status=413)
    # Read (and drop) the body within the cap so the connection stays usable.
    request.read(MAX_CALLBACK_BYTES)
    queued = services.request_prompt_poll(pk)
    return JsonResponse({"ok": True, "poll": queued}, status=202 if queued else 200)
