"""AWS Lambda entry point: ``encmigrate.lambda_rotation.lambda_handler`` rotates when due.

Schedule it daily with EventBridge; it does what ``encmigrate keys rotate
--if-due`` does (:meth:`encmigrate.keys.KeyManager.rotate_if_due`, which reads
the schedule and rotates under one hold of the provider's lock), through the
Secrets Manager provider. Configuration is the function's environment:
``ENCMIGRATE_AWS_SECRET_ID`` (default ``encmigrate/keyring``), ``AWS_REGION``
(set by Lambda), and optionally ``ENCMIGRATE_KEY_PROVIDER=aws-kms`` with
``ENCMIGRATE_KMS_KEY_ID``. Give the function the key-administrator policy
(docs/policies/aws/). The event may carry ``{"force": true, "reason": "..."}``
to rotate regardless of the schedule. The schedule is the keyring's own
(``rotation_days``, set by ``keys generate``), as for ``keys rotate --if-due``.

A Lambda has no durable disk, so the audit record of the run goes to the
``encmigrate.audit`` logger (CloudWatch Logs) as a structured event; with
``ENCMIGRATE_CLOUDWATCH_METRICS=1`` the key status gauges are published too.
A failure to publish them is logged and does not fail the run: the rotation
is already saved, and a retried event must not rotate a second time.

Functions deployed with the handler ``encmigrate.aws.lambda_handler`` keep
working: that module is an alias of this one's handler (deprecated).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from encmigrate.errors import EncmigrateError
from encmigrate.keys.audit import current_actor
from encmigrate.keys.manager import KeyManager, KeyStatus
from encmigrate.keys.resolve import resolve_key_setup

__all__ = ["lambda_handler", "scheduled_rotation"]

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("encmigrate.audit")


def scheduled_rotation(
    environ: Mapping[str, str], *, force: bool = False, reason: str = ""
) -> dict[str, Any]:
    """Rotate when the schedule (or ``force``) says so; returns what happened."""
    env = dict(environ)
    env.setdefault("ENCMIGRATE_KEY_PROVIDER", "aws-secrets-manager")
    setup = resolve_key_setup(None, environ=env, cwd="/")
    manager = KeyManager(setup.provider, setup.audit, actor=env.get("ENCMIGRATE_ACTOR"))
    result = manager.rotate_if_due(force=force, reason=reason or "scheduled")
    status = result.status
    audit_logger.info(
        "key audit event",
        extra={
            "audit": {
                "actor": manager.actor,
                "action": "rotate" if result.rotated else "rotate.not-due",
                "version": status.current,
                "outcome": "ok",
                "reason": reason or ("forced" if force else "scheduled"),
                "provider": setup.provider.name,
            }
        },
    )
    if env.get("ENCMIGRATE_CLOUDWATCH_METRICS") == "1":
        _publish(status, env)
    return {
        "rotated": result.rotated,
        "current": status.current,
        "days_until_rotation": status.days_until_rotation,
        "provider": setup.provider.describe(),
    }


def lambda_handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``encmigrate.lambda_rotation.lambda_handler``)."""
    for name in ("encmigrate", "encmigrate.audit"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    event = event or {}
    environ = dict(os.environ)
    request = getattr(context, "aws_request_id", None)
    environ.setdefault("ENCMIGRATE_ACTOR", f"lambda:{request}" if request else current_actor())
    result = scheduled_rotation(
        environ, force=bool(event.get("force", False)), reason=str(event.get("reason", ""))
    )
    logger.info("rotate-if-due: %s", result)
    return result


def _publish(status: KeyStatus, environ: Mapping[str, str]) -> None:
    from encmigrate.monitoring.cloudwatch import CloudWatchPublisher
    from encmigrate.monitoring.metrics import Metrics, new_registry

    metrics = Metrics(new_registry())
    metrics.observe_key_status(status)
    metrics.observe_health("degraded" if status.rotation_overdue else "healthy")
    try:
        CloudWatchPublisher(metrics, region=environ.get("AWS_REGION")).publish()
    except EncmigrateError as exc:
        logger.warning("key gauges not published to CloudWatch: %s", exc)
