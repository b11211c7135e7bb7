"""The webhook endpoint: send a job's webhook again once every attempt failed, or once
the receiver answered ``410 Gone``.

Declared as ``api.py`` declares its routes (so it shows in ``/openapi.json``); how a
webhook is delivered lives in ``webhooks.py``. The webhook goes back to ``pending`` with
its attempts counted from zero, the same body and the same ``webhook-id``; a process
that delivers (``vfe serve``, ``vfe worker``) claims it at its next look at the outbox,
within ``webhooks.LOOK_EVERY`` seconds.
"""

from __future__ import annotations

import time

from starlette.requests import Request

from .api import JOB_ID, job_id_param, stored_job
from .cache import job_key
from .endpoints import endpoint, error, ok
from .errors import Conflict, NotFound
from .services import services
from .views import WebhookView


@endpoint(
    "POST",
    "/job/{job_id}/webhook",
    "resendWebhook",
    "Send a job's failed or refused webhook again",
    ok(WebhookView, "The webhook, pending again: its attempts start over; the body and the "
       "webhook-id are the first ones, so a receiver still drops a repeat."),
    error(404, "No such job (also for an id that is not a UUID), or the job has no webhook "
          "(it named no webhook_url and WEBHOOK_URL was not set when it ended)."),
    error(409, "The job has not ended yet, or its webhook is pending (being tried) or was "
          "delivered."),
    params=(JOB_ID,),
)  # fmt: skip
async def resend_webhook(request: Request) -> WebhookView:
    """POST /job/{job_id}/webhook: a ``failed`` or ``gone`` webhook, pending again."""
    svc = services(request)
    job_id = job_id_param(request)
    job = await stored_job(svc, job_id)
    if not job.status.finished:
        raise Conflict(f"Job {job_id} is {job.status.value}: its webhook is sent when it ends")
    delivery = await svc.store.resend_delivery(job_id, time.time())
    if delivery is None:
        current = await svc.store.get_delivery(job_id)
        if current is None:
            raise NotFound(f"Job {job_id} has no webhook: it named no webhook_url, and "
                           "WEBHOOK_URL was not set when it ended")  # fmt: skip
        raise Conflict(f"The webhook of job {job_id} is {current.status.value}: only a "
                       "failed or gone one is sent again")  # fmt: skip
    await svc.cache.delete(job_key(job_id))  # its status shows the webhook
    return WebhookView.of(delivery)


ENDPOINTS = (resend_webhook,)
