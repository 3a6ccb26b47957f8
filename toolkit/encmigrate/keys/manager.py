"""Key operations: generate, rotate, retire, disable, enable, destroy, checkpoint, upgrade.

Every operation runs under the provider's lock as load, change, audit,
save. The audit line is written before the keyring is saved, keyed under
the new keyring, and the saved keyring records the audit head (the anchor),
so the log always holds at least every operation the keyring reflects; a
failed save is audited as a failure.

The operations that decide before they change (``rotate_if_due``,
``emergency_rotate``, ``destroy`` of a version values may still use) decide
inside that same lock, so two runs at once never both act on one reading.
The CLI only parses, calls these, and renders what they return.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from encmigrate.crypto.kdf import Kdf
from encmigrate.errors import (
    ConfigError,
    EncmigrateError,
    KeyConfigError,
    KeyStateError,
    RefusedError,
)
from encmigrate.keys.audit import AuditEvent, AuditLog, current_actor
from encmigrate.keys.audit_verify import verify_audit_log
from encmigrate.keys.keyring import AuditHead, Keyring, KeyState
from encmigrate.keys.providers import KeyProvider

__all__ = [
    "EmergencyRotation",
    "KeyManager",
    "KeyStatus",
    "RotationResult",
    "VersionStatus",
    "VersionUsage",
]

Clock = Callable[[], dt.datetime]

#: How many values each place (e.g. ``"customers.email"``) still holds under a key version:
#: ``destroy`` calls it with the version and refuses while any count is above zero. Build it
#: from the database, e.g. ``lambda v: {f"{s.table}.{s.column}": s.versions.get(v, 0) for s in
#: encmigrate.migrate.status(plan, engine)}`` (envelope headers only, no keys needed).
VersionUsage = Callable[[int], Mapping[str, int]]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: KeyState
    current: bool
    created: dt.datetime | None
    age_days: int | None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """What ``keys status`` shows: versions, states, ages and the rotation schedule."""

    provider: str
    kdf: Kdf
    current: int
    rotation_days: int
    versions: tuple[VersionStatus, ...]
    rotation_due: dt.datetime | None
    #: Whole days left, a partial day counted as one: 90 right after ``generate`` on a 90-day
    #: schedule, 1 with half a day left, 0 or less once the due time has passed.
    days_until_rotation: int | None

    @property
    def rotation_overdue(self) -> bool:
        return self.days_until_rotation is not None and self.days_until_rotation <= 0


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What ``rotate_if_due`` did, and the schedule as it stands afterwards."""

    rotated: bool
    status: KeyStatus


@dataclass(frozen=True, slots=True)
class EmergencyRotation:
    """What ``emergency_rotate`` did: ``old_version`` is disabled, or retired until rewrap."""

    old_version: int
    new_version: int
    disabled: bool


def _days_left(now: dt.datetime, due: dt.datetime) -> int:
    """Days until ``due``, rounded up: rounding down said 89 a second after a 90-day key was
    made, and counted the last partial day as overdue (``rotate --if-due`` rotated early)."""
    return -((now - due) // dt.timedelta(days=1))


class KeyManager:
    """Key operations on one provider, each recorded in the audit log."""

    def __init__(
        self,
        provider: KeyProvider,
        audit: AuditLog | None = None,
        *,
        actor: str | None = None,
        clock: Clock = _utcnow,
    ) -> None:
        self.provider = provider
        self.audit = audit
        self.actor = actor or current_actor()
        self._clock = clock

    def __repr__(self) -> str:
        return f"KeyManager({self.provider!r}, actor={self.actor!r})"

    # -- reading ----------------------------------------------------------

    def load(self) -> Keyring:
        return self.provider.load()

    def get_current_key_version(self) -> int:
        return self.load().current

    def status(self, rotation_days: int | None = None) -> KeyStatus:
        """Versions, states, ages and the schedule (``rotation_days`` overrides the keyring's)."""
        return self._status_of(self.load(), rotation_days)

    def _status_of(self, keyring: Keyring, rotation_days: int | None) -> KeyStatus:
        now = self._clock()
        days = rotation_days or keyring.rotation_days
        created = keyring.current_entry.created
        due = created + dt.timedelta(days=days) if created else None
        return KeyStatus(
            provider=self.provider.describe(),
            kdf=keyring.kdf,
            current=keyring.current,
            rotation_days=days,
            versions=tuple(
                VersionStatus(
                    version=v.version,
                    state=v.state,
                    current=v.version == keyring.current,
                    created=v.created,
                    age_days=(now - v.created).days if v.created else None,
                )
                for v in keyring.versions
            ),
            rotation_due=due,
            days_until_rotation=_days_left(now, due) if due else None,
        )

    def rotation_due(self) -> bool:
        return self.status().rotation_overdue

    # -- operations ---------------------------------------------------------

    def generate(
        self, *, kdf: Kdf | str = Kdf.HKDF_SHA256, rotation_days: int = 90, overwrite: bool = False
    ) -> Keyring:
        """Create a keyring with one fresh version; refuses to replace one unless told."""
        with self._operation("generate") as op:
            if self.provider.exists() and not overwrite:
                raise RefusedError(
                    f"{self.provider.describe()} already holds a keyring; "
                    "refusing to replace it (its keys may still be needed to decrypt data)"
                )
            keyring = Keyring.generate(kdf=kdf, rotation_days=rotation_days, now=self._clock())
            op.version = keyring.current
            return self._commit(keyring, op, erase_previous=overwrite)

    def rotate(self, reason: str = "") -> int:
        """Make a fresh random version current; the old one stays readable (retired)."""
        with self._operation("rotate", reason=reason) as op:
            keyring = self.load().rotated(self._clock())
            op.version = keyring.current
            self._commit(keyring, op)
            return keyring.current

    rotate_keys = rotate

    def rotate_if_due(
        self, rotation_days: int | None = None, *, force: bool = False, reason: str = "scheduled"
    ) -> RotationResult:
        """Rotate when the schedule says so (or ``force``); what cron and the Lambda run.

        The schedule is read and the rotation made under one hold of the provider's
        lock (a networked provider reads fresh inside it, not from its cache): two
        schedulers firing at once rotate once, not twice. Not due, nothing is written.
        """
        with self._operation("rotate", reason=reason) as op:
            keyring = self.load()
            before = self._status_of(keyring, rotation_days)
            if not (force or before.rotation_overdue):
                return RotationResult(rotated=False, status=before)
            keyring = keyring.rotated(self._clock())
            op.version = keyring.current
            keyring = self._commit(keyring, op)
            return RotationResult(rotated=True, status=self._status_of(keyring, rotation_days))

    def emergency_rotate(self, reason: str, *, disable_now: bool = False) -> EmergencyRotation:
        """Rotate now after a suspected leak; disable the old version now or after rewrap.

        The audit log records the incident (the reason and the plan for the old
        version) before the rotation, so the rotation's stored audit head covers
        that line: removing it is detected by ``keys audit --verify``. The record,
        the rotation and the disable happen under one hold of the provider's lock.
        """
        if not reason.strip():
            raise ConfigError(
                "an emergency rotation needs a reason: it is recorded in the audit log"
            )
        with self._operation("rotate", reason=f"emergency: {reason}") as op:
            keyring = self.load()
            old = keyring.current
            plan = "disable now" if disable_now else "disable after `encmigrate rewrap` completes"
            incident = {"old_version": old, "follow_up": f"{plan}: version {old}"}
            self._audit(
                AuditEvent("emergency-rotate", "ok", old, reason, self.actor, incident), keyring
            )
            keyring = keyring.rotated(self._clock())
            op.version = keyring.current
            keyring = self._commit(keyring, op)
            if disable_now:
                disable = _Operation("disable", old, f"emergency: {reason}")
                self._commit(keyring.with_state(old, KeyState.DISABLED, self._clock()), disable)
            return EmergencyRotation(
                old_version=old, new_version=keyring.current, disabled=disable_now
            )

    def retire(self, version: int, reason: str = "") -> Keyring:
        return self._set_state("retire", version, KeyState.RETIRED, reason)

    def disable(self, version: int, reason: str = "") -> Keyring:
        """Refuse decryption under ``version`` until :meth:`enable`."""
        return self._set_state("disable", version, KeyState.DISABLED, reason)

    def enable(self, version: int, reason: str = "") -> Keyring:
        """Make a disabled version readable again (it comes back retired)."""
        return self._set_state("enable", version, KeyState.RETIRED, reason)

    def destroy(
        self,
        version: int,
        *,
        confirm: bool = False,
        reason: str = "",
        in_use: VersionUsage | None = None,
        force: bool = False,
    ) -> Keyring:
        """Erase ``version``'s material for good; needs ``confirm=True``.

        Refused (:class:`RefusedError`) while ``in_use(version)`` counts values
        under it, and when nothing was given to count them: pass ``in_use`` (see
        :data:`VersionUsage`), or ``force=True`` (CLI: ``--force``) to destroy
        without counting or despite the count, losing those values.

        The material is removed from the stored keyring, the previous keyring
        file's bytes are overwritten, and the destroyed version's key in the
        copy loaded here is wiped (only that one: the keyring returned, and a
        provider's cached copy, share the other versions' key objects).
        Copies elsewhere in memory (other processes, freed buffers) are out
        of reach: see docs/keys.md.
        """
        with self._operation("destroy", version=version, reason=reason) as op:
            if confirm is not True:
                raise RefusedError(
                    f"destroying key version {version} is permanent: data under it can never be "
                    "read again; pass confirm=True (CLI: --confirm) to proceed"
                )
            if not force:
                _refuse_if_in_use(version, in_use)
            before = self.load()
            after = before.destroyed(version, self._clock())
            after = self._commit(after, op, erase_previous=True)
            before.wipe_version(version)
            return after

    def checkpoint(self, reason: str = "") -> Keyring:
        """Anchor the audit log's head in the stored keyring (schedule it, e.g. daily).

        Lines up to an anchor cannot be removed or rolled back without the
        keyring's writer noticing; a log that does not verify is not anchored
        (refused, exit 5), so the checkpoint never blesses a damaged log.
        """
        with self._operation("audit.checkpoint", reason=reason) as op:
            keyring = self.load()
            op.version = keyring.current
            if self.audit is None:
                raise KeyConfigError(
                    "no audit log is configured for this keyring: set [keys] audit_log in "
                    "encmigrate.toml"
                )
            report = verify_audit_log(self.audit.path, keyring)
            if not report.ok:
                raise RefusedError(
                    f"the audit log {self.audit.path} does not verify ({len(report.problems)} "
                    "problem(s)); it is not anchored: `encmigrate keys audit --verify` lists them"
                )
            return self._commit(keyring, op)

    def upgrade(self, reason: str = "") -> Keyring:
        """Save the keyring again in the current form (authenticated, audit head anchored).

        A wrapped keyring written by an older encmigrate is not authenticated
        and loads only here, once; check ``keys status`` first: whatever the
        stored document says now is what gets authenticated.
        """
        with self._operation("keys.upgrade", reason=reason) as op:
            load_legacy = getattr(self.provider, "load_unauthenticated", None)
            keyring = load_legacy() if callable(load_legacy) else self.load()
            op.version = keyring.current
            return self._commit(keyring, op)

    def _set_state(self, action: str, version: int, state: KeyState, reason: str) -> Keyring:
        with self._operation(action, version=version, reason=reason) as op:
            keyring = self.load()
            entry = keyring.get(version)
            if action == "enable" and entry.state is not KeyState.DISABLED:
                raise KeyStateError(f"key version {version} is {entry.state.value}, not disabled")
            return self._commit(keyring.with_state(version, state, self._clock()), op)

    # -- plumbing -------------------------------------------------------------

    @contextmanager
    def _operation(
        self, action: str, *, version: int | None = None, reason: str = ""
    ) -> Iterator[_Operation]:
        """Hold the provider's lock; audit a refusal or failure before re-raising."""
        op = _Operation(action, version, reason)
        with self.provider.lock():
            try:
                yield op
            except EncmigrateError as exc:
                if not op.committed:
                    outcome = (
                        "refused" if isinstance(exc, RefusedError | KeyStateError) else "failed"
                    )
                    event = AuditEvent(action, outcome, op.version, _one_line(exc), self.actor)
                    self._audit(event, self._keyring_for_audit())
                raise

    def _commit(self, keyring: Keyring, op: _Operation, *, erase_previous: bool = False) -> Keyring:
        event = AuditEvent(op.action, "ok", op.version, op.reason, self.actor)
        head = self._audit(event, keyring)
        if head is not None:
            keyring = keyring.with_audit_head(head)
        self.provider.save(keyring, erase_previous=erase_previous)
        op.committed = True
        return keyring

    def _audit(self, event: AuditEvent, keyring: Keyring | None) -> AuditHead | None:
        if self.audit is None:
            return None
        return self.audit.append(event, now=self._clock(), keyring=keyring)

    def _keyring_for_audit(self) -> Keyring | None:
        """The stored keyring, to key a refusal's line; ``None`` when it cannot be read."""
        if self.audit is None:
            return None
        try:
            return self.load()
        except EncmigrateError:
            return None


@dataclass(slots=True)
class _Operation:
    action: str
    version: int | None
    reason: str
    committed: bool = False


def _refuse_if_in_use(version: int, in_use: VersionUsage | None) -> None:
    if in_use is None:
        raise RefusedError(
            f"nothing counted the values still under key version {version}: pass in_use= "
            "(counts per column, e.g. from encmigrate.migrate.status) or force=True "
            "(CLI: --force) to destroy it without counting"
        )
    counts = {place: count for place, count in in_use(version).items() if count}
    if counts:
        where = ", ".join(f"{place}: {count:,}" for place, count in counts.items())
        raise RefusedError(
            f"key version {version} still protects values ({where}); run `encmigrate rewrap` "
            "first (then `encmigrate status` shows none), or pass --force to lose them"
        )


def _one_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
