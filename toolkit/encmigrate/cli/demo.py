"""``encmigrate demo``: a short tour of the crypto core on an embedded SQLite database.

It generates a keyring, encrypts a sample customers table with the batch
path, searches it by email through blind-index tokens, rotates the key and
shows that old rows still decrypt and are still found. (The five-step
migration demo replaces this as the migrator lands.)
"""

from __future__ import annotations

import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.table import Table

from encmigrate.api import get_cipher, get_searchable_cipher
from encmigrate.cli.console import out
from encmigrate.cli.state import reports_errors
from encmigrate.keys import AuditLog, FileProvider, KeyManager, load_keyring, verify_audit_log
from encmigrate.keys.resolve import AUDIT_FILE, KeySetup

__all__ = ["demo"]

FIRST = ["Zoë", "Łukasz", "Amélie", "Søren", "Chidi", "Mei", "José", "Ana", "Björn", "Priya"]
LAST = ["Müller", "O'Brien", "Nakamura", "García", "Okafor", "Kowalski", "Dubois", "Singh"]


def _customers(count: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    rows = []
    for i in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append(
            {
                "id": i,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{i}@example.com",
                "balance": Decimal(rng.randrange(0, 10_000_00)) / 100,
            }
        )
    return rows


@reports_errors
def demo(
    rows: Annotated[
        int, typer.Option("--rows", min=1, help="Sample customers to create.")
    ] = 20_000,
    workdir: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to put the keyring and database (default: a temp dir)."),
    ] = None,
) -> None:
    """Generate keys, encrypt a sample table, search it, rotate, and read it back.

    Example: [bold]encmigrate demo --rows 5000[/]
    """
    with tempfile.TemporaryDirectory(prefix="encmigrate-demo-") as scratch:
        base = workdir or Path(scratch)
        base.mkdir(parents=True, exist_ok=True)
        _tour(base, rows)


def _tour(base: Path, count: int) -> None:
    keyring_path = base / "keyring.json"
    keyring_path.unlink(missing_ok=True)
    (base / AUDIT_FILE).unlink(missing_ok=True)
    setup = KeySetup(FileProvider(keyring_path), AuditLog(base / AUDIT_FILE), "ENCMIGRATE_", "demo")
    manager = KeyManager(setup.provider, setup.audit, actor="demo")
    manager.generate()
    out.rule("1. Keys")
    out.print(f"Generated {keyring_path} (mode 0600) with key version 1; audit log beside it.")

    engine = sa.create_engine(f"sqlite:///{base / 'demo.db'}")
    meta = sa.MetaData()
    customers = sa.Table(
        "customers",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("balance", sa.Numeric),
        sa.Column("email_encrypted", sa.LargeBinary),
        sa.Column("email_search", sa.LargeBinary, index=True),
        sa.Column("balance_encrypted", sa.LargeBinary),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    sample = _customers(count)
    with engine.begin() as conn:
        conn.execute(customers.insert(), sample)

    out.rule("2. Encrypt")
    keyring = load_keyring(setup)
    email = get_searchable_cipher("customers.email", normalize="lower", keyring=keyring)
    balance = get_cipher("customers.balance", type="numeric", keyring=keyring)
    started = time.perf_counter()
    emails = [r["email"] for r in sample]
    updates = [
        {"k": r["id"], "e": blob, "t": token, "b": bal}
        for r, blob, token, bal in zip(
            sample,
            email.batch_encrypt(emails),
            email.batch_tokens(emails),
            balance.batch_encrypt([r["balance"] for r in sample]),
            strict=True,
        )
    ]
    with engine.begin() as conn:
        conn.execute(
            customers.update()
            .where(customers.c.id == sa.bindparam("k"))
            .values(
                email_encrypted=sa.bindparam("e"),
                email_search=sa.bindparam("t"),
                balance_encrypted=sa.bindparam("b"),
            ),
            updates,
        )
    elapsed = time.perf_counter() - started
    out.print(
        f"Encrypted {count:,} emails and balances in {elapsed:.2f}s "
        f"({count / elapsed:,.0f} rows/s), with search tokens for email."
    )
    with engine.connect() as conn:
        first = (
            conn.execute(sa.select(customers).order_by(customers.c.id).limit(3)).mappings().all()
        )
    table = Table("id", "email (plaintext)", "email_encrypted", "balance (decrypted)")
    for row in first:
        table.add_row(
            str(row["id"]),
            row["email"],
            row["email_encrypted"][:12].hex() + "…",
            str(balance.decrypt(row["balance_encrypted"])),
        )
    out.print(table)

    out.rule("3. Search")
    target = sample[count // 2]["email"]
    _search(engine, customers, email, str(target).upper())

    out.rule("4. Rotate")
    new_version = manager.rotate(reason="demo")
    keyring = load_keyring(setup)
    email = get_searchable_cipher("customers.email", normalize="lower", keyring=keyring)
    out.print(f"Version {new_version} is current; version 1 is retired (decrypt only).")
    with engine.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {
                    "id": count + 1,
                    "name": "New Customer",
                    "email": "new@example.com",
                    "email_encrypted": email.encrypt("new@example.com"),
                    "email_search": email.token("new@example.com"),
                }
            ],
        )
    _search(engine, customers, email, str(target))
    _search(engine, customers, email, "NEW@example.com")

    out.rule("5. Audit")
    report = verify_audit_log(
        setup.audit.path if setup.audit else base / AUDIT_FILE, manager.load().audit_head
    )
    out.print(f"Audit log: {report.lines} events, chain {'intact' if report.ok else 'BROKEN'}.")


def _search(engine: sa.Engine, customers: sa.Table, email: object, value: str) -> None:
    from encmigrate.crypto.search import SearchableCipher

    assert isinstance(email, SearchableCipher)
    tokens = email.lookup_tokens(value)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(customers.c.id, customers.c.email_encrypted).where(
                customers.c.email_search.in_(tokens)
            )
        ).all()
    for row in found:
        version = int.from_bytes(row.email_encrypted[1:5], "big")
        out.print(
            f"find {value!r}: id {row.id}, key version {version}, "
            f"decrypts to {email.decrypt(row.email_encrypted)!r}"
        )
    if not found:
        out.print(f"find {value!r}: no match")
