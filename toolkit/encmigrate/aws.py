"""AWS Lambda entry point: ``encmigrate.aws.lambda_handler`` rotates the keyring when it is due.

Schedule it daily with EventBridge; it does what ``encmigrate keys rotate
--if-due`` does, through the Secrets Manager provider. Configuration is the
function's environment: ``ENCMIGRATE_AWS_SECRET_ID`` (default
``encmigrate/keyring``), ``AWS_REGION`` (set by Lambda), and optionally
``ENCMIGRATE_KEY_PROVIDER=aws-kms`` with ``ENCMIGRATE_KMS_KEY_ID``. Give the
function the key-administrator policy (docs/policies/aws/). The event may
carry ``{"force": true, "reason": "..."}`` to rotate regardless of the schedule.

A Lambda has no durable disk, so the audit record of the run goes to the
``encmigrate.audit`` logger (CloudWatch Logs) as a structured event; with
``ENCMIGRATE_CLOUDWATCH_METRICS=1`` the key status gauges are published too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from encmigrate.keys.audit import current_actor
from encmigrate.keys.manager import KeyManager
from encmigrate.keys.resolve import resolve_key_setup

__all__ = ["lambda_handler", "rotate_if_due"]

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("encmigrate.audit")


def rotate_if_due(
    environ: Mapping[str, str], *, force: bool = False, reason: str = ""
) -> dict[str, Any]:
    """Rotate when the schedule (or ``force``) says so; returns what happened."""
    env = dict(environ)
    env.setdefault("ENCMIGRATE_KEY_PROVIDER", "aws-secrets-manager")
    setup = resolve_key_setup(None, environ=env, cwd="/")
    manager = KeyManager(setup.provider, setup.audit, actor=env.get("ENCMIGRATE_ACTOR"))
    with setup.provider.lock():  # inside the lock a provider reads fresh, not from its cache
        before = manager.status(setup.rotation_days)
    rotated = force or before.rotation_overdue
    current = manager.rotate(reason or "scheduled") if rotated else before.current
    status = manager.status(setup.rotation_days)
    audit_logger.info(
        "key audit event",
        extra={
            "audit": {
                "actor": manager.actor,
                "action": "rotate" if rotated else "rotate.not-due",
                "version": current,
                "outcome": "ok",
                "reason": reason or ("forced" if force else "scheduled"),
                "provider": setup.provider.name,
            }
        },
    )
    if env.get("ENCMIGRATE_CLOUDWATCH_METRICS") == "1":
        _publish(status, env)
    return {
        "rotated": rotated,
        "current": current,
        "days_until_rotation": status.days_until_rotation,
        "provider": setup.provider.describe(),
    }


def lambda_handler(event: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``encmigrate.aws.lambda_handler``)."""
    for name in ("encmigrate", "encmigrate.audit"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    event = event or {}
    environ = dict(os.environ)
    request = getattr(context, "aws_request_id", None)
    environ.setdefault("ENCMIGRATE_ACTOR", f"lambda:{request}" if request else current_actor())
    result = rotate_if_due(
        environ, force=bool(event.get("force", False)), reason=str(event.get("reason", ""))
    )
    logger.info("rotate-if-due: %s", result)
    return result


def _publish(status: Any, environ: Mapping[str, str]) -> None:
    from encmigrate.monitoring.cloudwatch import CloudWatchPublisher
    from encmigrate.monitoring.metrics import Metrics, new_registry

    metrics = Metrics(new_registry())
    metrics.observe_key_status(status)
    metrics.observe_health("degraded" if status.rotation_overdue else "healthy")
    CloudWatchPublisher(metrics, region=environ.get("AWS_REGION")).publish()
