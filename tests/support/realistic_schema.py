"""A small shop's production schema, its data, its plan and its application, for end-to-end proofs.

Every schema the suite used before was written for encmigrate, and a new user
lost data on a real one. This one looks like production: a range-partitioned
table with a DEFAULT partition and a composite primary key that includes the
partition key, a hash-partitioned table, a foreign key into the encrypted
table, a generated column, a view, a materialized view and a PL/pgSQL function
over planned columns, a UNIQUE constraint and CHECK constraints on planned and
unplanned columns, an application trigger, NULLs, unicode and long strings.
SQLite gets the subset it has: no partitions, materialized views or functions,
and no CHECK on a planned column (SQLite can drop one only by rebuilding the
table, and step 5 refuses to lose it silently). MariaDB gets the form it
allows (support/realistic_mariadb.py): no DEFAULT range partition, no foreign
keys on partitioned tables, no materialized view.

:class:`Shop` generates the data deterministically from a seed and is the
ledger: the value the application last wrote to every planned column of every
row (or the row's absence once deleted). :class:`Application` is the shop's own
code, writing on its own connection while the operator runs the five steps.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

import encmigrate
from encmigrate import Keyring
from encmigrate.crypto.codecs import JSON_NULL
from support import realistic_mariadb

Key = tuple[Any, ...]
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Planned:
    """One planned column, as the plan TOML declares it."""

    table: str
    column: str
    type: str = "string"
    searchable: bool = False
    normalize: str = "none"
    unique_token: bool = False

    @property
    def context(self) -> str:
        return f"{self.table}.{self.column}"


PLANNED: tuple[Planned, ...] = (
    Planned("customers", "email", searchable=True, normalize="lower", unique_token=True),
    Planned("customers", "full_name"),
    Planned("customers", "phone"),
    Planned("customers", "birth_date", "date"),
    Planned("customers", "notes", "json"),
    Planned("payments", "card_last4"),
    Planned("payments", "amount", "numeric"),
    Planned("addresses", "street"),
    Planned("addresses", "postcode"),
)
TABLES = ("customers", "payments", "addresses")
KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("id",),
    "payments": ("paid_on", "id"),
    "addresses": ("customer_id", "id"),
}
# Unplanned columns the ledger keeps too (they are part of what an insert writes).
EXTRA: dict[str, tuple[str, ...]] = {
    "customers": ("status",),
    "payments": ("customer_id", "currency"),
    "addresses": ("city",),
}


def planned(table: str) -> tuple[Planned, ...]:
    return tuple(p for p in PLANNED if p.table == table)


# -- partitions -------------------------------------------------------------------------------

# (partition, from inclusive, to exclusive); dates outside every range go to payments_default
# (on MariaDB, those before the first range to realistic_mariadb.EARLY).
PAYMENT_RANGES = (
    ("payments_2023", dt.date(2023, 1, 1), dt.date(2024, 1, 1)),
    ("payments_2024", dt.date(2024, 1, 1), dt.date(2025, 1, 1)),
    ("payments_2025", dt.date(2025, 1, 1), dt.date(2026, 1, 1)),
)
PAYMENT_DEFAULT = "payments_default"
# Payment dates are drawn from here: 2022H2 and 2026H1 land in the DEFAULT partition.
PAID_FROM, PAID_DAYS = dt.date(2022, 7, 1), 4 * 365
ADDRESS_MODULUS = 3
# Rows per table the application writes again and again (each burst picks half from these).
HOT_ROWS = 40


def payment_partition(paid_on: dt.date, dialect: str = "postgresql") -> str:
    if dialect == "mysql" and paid_on < PAYMENT_RANGES[0][1]:
        return realistic_mariadb.EARLY
    for name, start, end in PAYMENT_RANGES:
        if start <= paid_on < end:
            return name
    return PAYMENT_DEFAULT


# -- DDL --------------------------------------------------------------------------------------

PG_DDL = [
    """
    CREATE TABLE customers (
        id bigint PRIMARY KEY,
        email text NOT NULL CONSTRAINT customers_email_key UNIQUE,
        full_name text CONSTRAINT full_name_not_blank CHECK (length(full_name) > 0),
        phone text,
        birth_date date,
        notes jsonb,
        email_domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED,
        status text NOT NULL DEFAULT 'active'
            CONSTRAINT status_known CHECK (status IN ('active', 'closed')),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz
    )
    """,
    # The application's own trigger fires on every UPDATE, the migrator's shadow-only
    # writes included (no column list): the harder case for encmigrate's trigger.
    """
    CREATE FUNCTION customers_touch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$
    """,
    "CREATE TRIGGER customers_touch BEFORE UPDATE ON customers "
    "FOR EACH ROW EXECUTE FUNCTION customers_touch()",
    "CREATE VIEW customer_directory AS "
    "SELECT id, full_name, email, email_domain FROM customers WHERE status = 'active'",
    # PL/pgSQL bodies are not in pg_depend: only a text search of the source finds this one.
    """
    CREATE FUNCTION customer_label(customer bigint) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
    DECLARE
        label text;
    BEGIN
        SELECT coalesce(full_name, '(no name)') INTO label FROM customers WHERE id = customer;
        RETURN label;
    END
    $$
    """,
    """
    CREATE TABLE payments (
        id bigint NOT NULL,
        paid_on date NOT NULL,
        customer_id bigint NOT NULL REFERENCES customers (id),
        card_last4 text,
        amount numeric(12, 2) NOT NULL,
        currency char(3) NOT NULL DEFAULT 'EUR',
        PRIMARY KEY (paid_on, id)
    ) PARTITION BY RANGE (paid_on)
    """,
    *(
        f"CREATE TABLE {name} PARTITION OF payments FOR VALUES FROM ('{start}') TO ('{end}')"
        for name, start, end in PAYMENT_RANGES
    ),
    f"CREATE TABLE {PAYMENT_DEFAULT} PARTITION OF payments DEFAULT",
    "CREATE INDEX payments_customer ON payments (customer_id)",
    "CREATE INDEX payments_card_last4 ON payments (card_last4)",
    """
    CREATE TABLE addresses (
        customer_id bigint NOT NULL REFERENCES customers (id),
        id bigint NOT NULL,
        street text,
        postcode text,
        city text NOT NULL,
        PRIMARY KEY (customer_id, id)
    ) PARTITION BY HASH (customer_id)
    """,
    *(
        f"CREATE TABLE addresses_p{r} PARTITION OF addresses "
        f"FOR VALUES WITH (MODULUS {ADDRESS_MODULUS}, REMAINDER {r})"
        for r in range(ADDRESS_MODULUS)
    ),
]
# Created after the data is loaded (a materialized view is filled when created).
PG_AFTER_LOAD = [
    """
    CREATE MATERIALIZED VIEW customer_spend AS
    SELECT c.id, c.full_name, sum(p.amount) AS total
    FROM customers c JOIN payments p ON p.customer_id = c.id
    GROUP BY c.id, c.full_name
    """,
    "ANALYZE customers",
    "ANALYZE payments",
    "ANALYZE addresses",
]

SQLITE_DDL = [
    """
    CREATE TABLE customers (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL,
        full_name TEXT,
        phone TEXT,
        birth_date DATE,
        notes JSON,
        email_domain TEXT GENERATED ALWAYS AS (substr(email, instr(email, '@') + 1)) VIRTUAL,
        status TEXT NOT NULL DEFAULT 'active'
            CONSTRAINT status_known CHECK (status IN ('active', 'closed')),
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TEXT
    )
    """,
    "CREATE UNIQUE INDEX customers_email_key ON customers (email)",
    """
    CREATE TRIGGER customers_touch AFTER UPDATE ON customers FOR EACH ROW
    BEGIN
        UPDATE customers SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
    END
    """,
    # Without email_domain: SQLite cannot drop a column a view reads, and the operator drops
    # the generated column early there (before step 4 builds a view over it).
    "CREATE VIEW customer_directory AS "
    "SELECT id, full_name, email FROM customers WHERE status = 'active'",
    """
    CREATE TABLE payments (
        id INTEGER NOT NULL,
        paid_on DATE NOT NULL,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        card_last4 TEXT,
        amount NUMERIC(12, 2) NOT NULL,
        currency TEXT NOT NULL DEFAULT 'EUR',
        PRIMARY KEY (paid_on, id)
    )
    """,
    "CREATE INDEX payments_customer ON payments (customer_id)",
    "CREATE INDEX payments_card_last4 ON payments (card_last4)",
    """
    CREATE TABLE addresses (
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        id INTEGER NOT NULL,
        street TEXT,
        postcode TEXT,
        city TEXT NOT NULL,
        PRIMARY KEY (customer_id, id)
    )
    """,
]

MARIADB_DDL = realistic_mariadb.ddl(PAYMENT_RANGES, PAYMENT_DEFAULT, ADDRESS_MODULUS)
DDL = {"postgresql": PG_DDL, "sqlite": SQLITE_DDL, "mysql": MARIADB_DDL}
AFTER_LOAD = {"postgresql": PG_AFTER_LOAD, "mysql": realistic_mariadb.AFTER_LOAD}

# The objects `plan check` must name as depending on planned columns, per dialect.
DEPENDENTS = {
    "postgresql": (
        "customer_directory",  # view
        "customer_spend",  # materialized view
        "customer_label",  # PL/pgSQL function (source text only)
        "email_domain",  # generated column
        "customers_email_key",  # unique constraint
        "full_name_not_blank",  # CHECK on a planned column
    ),
    "sqlite": (
        "customer_directory",
        "email_domain",
        "customers_email_key",
    ),
    "mysql": (
        "customer_directory",
        "customer_label",  # SQL function (its body is text in information_schema.ROUTINES)
        "email_domain",
        "customers_email_key",
        "full_name_not_blank",
    ),
}
# Of those, the ones that make DROP COLUMN fail: drop-unencrypted must refuse naming them.
BLOCKING = {
    "postgresql": ("customer_directory", "customer_spend", "email_domain"),
    "sqlite": ("customer_directory",),
    "mysql": ("customer_directory", "email_domain", "full_name_not_blank"),
}


def plan_toml(*, unique_token: bool = True) -> str:
    """The ``[[columns]]`` entries appended to the plan ``encmigrate init`` writes."""
    parts: list[str] = []
    for p in PLANNED:
        lines = ["", "[[columns]]", f'table = "{p.table}"', f'column = "{p.column}"']
        lines.append(f'type = "{p.type}"')
        if p.searchable:
            lines += ["searchable = true", f'normalize = "{p.normalize}"']
        if p.unique_token and unique_token:
            lines.append("unique_token = true")
        parts.append("\n".join(lines))
    return "\n".join(parts) + "\n"


# -- values -----------------------------------------------------------------------------------

FIRST = ["Zoë", "Łukasz", "Amélie", "Søren", "Chidi", "美咲", "Ólafur", "Nguyễn", "Ærin", "José"]
LAST = ["Müller", "Østergaard", "O'Brien", "Dvořák", "山田", "김", "Ибрагимов", "Ñúñez", "Smith"]
DOMAINS = ["Example.com", "mail.例え.jp", "ÉCOLE.fr", "shop.🛒.io", "posteo.DE"]
STREETS = [
    "Rue de l'Église",
    "Hauptstraße",
    "Calle Año Nuevo",
    "銀座通り",
    "Ulitsa Lenina",
    "Mill Ln",
]
CITIES = ["Paris", "München", "Sevilla", "東京", "Москва", "Leeds"]


def _amount(rng: random.Random) -> Decimal:
    roll = rng.random()
    if roll < 0.01:
        return Decimal(0).scaleb(-2)  # 0.00
    if roll < 0.02:
        return Decimal(999_999_999_999).scaleb(-2)  # the largest numeric(12, 2)
    if roll < 0.07:
        return Decimal(-rng.randrange(1, 50_000)).scaleb(-2)  # refunds
    return Decimal(rng.randrange(1, 2_000_000)).scaleb(-2)


def _notes(i: int, rng: random.Random) -> Any:
    """jsonb as applications store it: mostly objects, sometimes bare scalars, lists, null."""
    if i % 11 == 0:
        return None  # SQL NULL
    if i % 101 == 0:
        return JSON_NULL  # a JSON null: a value
    if i % 37 == 0:
        return f"VIP — 顧客 ✨ {i}"  # a bare JSON string
    if i % 53 == 0:
        return i * 3
    if i % 59 == 0:
        return ["ü", i, True, None]
    return {
        "tier": rng.choice(["gold", "free", "staff"]),
        "tags": [i % 7, "ñ", "🎉"],
        "opt_in": rng.random() < 0.5,
        "note": rng.choice(["", "appelle après 18h", "電話は午後のみ", "x" * 300]),
    }


@dataclass
class Sizes:
    customers: int
    payments: int
    addresses: int

    @classmethod
    def of(cls, rows: int) -> Sizes:
        """``rows`` split like a shop's: 15 customers to 30 payments to 8 addresses."""
        unit = max(rows // 53, 1)
        return cls(customers=15 * unit, payments=30 * unit, addresses=8 * unit)

    @property
    def total(self) -> int:
        return self.customers + self.payments + self.addresses


@dataclass
class Shop:
    """The expected state: the generated rows, overwritten by the application's writes.

    ``rows[table][key]`` holds the planned columns (and a few unplanned ones) as
    the application last wrote them; a deleted row's key is gone and listed in
    ``deleted``. ``via_view`` holds the (table, key, column) cells whose last
    write went through the ``<table>_secure`` view: their plaintext is NULL
    from then on and the ciphertext is the truth. ``pending`` holds the cells
    whose ciphertext the shadow trigger cleared (or never had one) until the
    next catch-up run encrypts them (:meth:`caught_up`).

    The shadow trigger compares values (docs/application-writes.md): a write
    that leaves a column as it was, NULL over NULL included, is no write to
    that column. So NULL written to the table's plaintext of a row written
    through the view (its plaintext is NULL already) leaves the ciphertext,
    and NULL written through the view over a ciphertext the trigger had
    cleared leaves the pending plaintext: the ledger follows the same rule.
    """

    sizes: Sizes
    seed: int = 7
    rows: dict[str, dict[Key, Row]] = field(default_factory=dict)
    deleted: dict[str, set[Key]] = field(default_factory=dict)
    via_view: set[tuple[str, Key, str]] = field(default_factory=set)
    pending: set[tuple[str, Key, str]] = field(default_factory=set)
    next_id: dict[str, int] = field(default_factory=dict)
    serial: int = 0
    # (table, key) -> the writes to that row, in order: what the application did (no values).
    history: dict[tuple[str, Key], list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.rows = {t: {} for t in TABLES}
        self.deleted = {t: set() for t in TABLES}
        for i in range(1, self.sizes.customers + 1):
            self.rows["customers"][(i,)] = self.customer(i, rng)
        for i in range(1, self.sizes.payments + 1):
            row = self.payment(i, rng)
            self.rows["payments"][(row["paid_on"], i)] = row
        for i in range(1, self.sizes.addresses + 1):
            row = self.address(i, rng)
            self.rows["addresses"][(row["customer_id"], i)] = row
        self.next_id = {
            "customers": self.sizes.customers + 1_000_000,
            "payments": self.sizes.payments + 1_000_000,
            "addresses": self.sizes.addresses + 1_000_000,
        }

    # -- generators (also used by the application for new values) ---------------------

    def email(self, i: int, rng: random.Random) -> str:
        """Unique under the blind index's ``lower`` normalisation (the number is unique)."""
        self.serial += 1
        local = f"{rng.choice(FIRST)}.{rng.choice(LAST)}".replace(" ", "")
        return f"{local}.{i}.{self.serial}@{rng.choice(DOMAINS)}"

    def customer(self, i: int, rng: random.Random) -> Row:
        name: str | None = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if i % 23 == 0:
            name = None
        elif i % 499 == 0:
            name = "Ω" + "ß🙂" * 1500  # long
        return {
            "id": i,
            "email": self.email(i, rng),
            "full_name": name,
            "phone": None if i % 5 == 0 else f"+{rng.randrange(1, 99)} {rng.randrange(10**9):09d}",
            "birth_date": None
            if i % 17 == 0
            else dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(25_000)),
            "notes": _notes(i, rng),
            "status": "closed" if i % 13 == 0 else "active",
        }

    def payment(self, i: int, rng: random.Random, *, customer_id: int | None = None) -> Row:
        return {
            "id": i,
            "paid_on": PAID_FROM + dt.timedelta(days=rng.randrange(PAID_DAYS)),
            "customer_id": customer_id or rng.randrange(1, self.sizes.customers + 1),
            "card_last4": None if i % 7 == 0 else f"{rng.randrange(10_000):04d}",
            "amount": _amount(rng),
            "currency": rng.choice(["EUR", "GBP", "JPY"]),
        }

    def address(self, i: int, rng: random.Random, *, customer_id: int | None = None) -> Row:
        street: str | None = f"{rng.randrange(1, 300)} {rng.choice(STREETS)}"
        if i % 19 == 0:
            street = None
        elif i % 211 == 0:
            street = "Allée " + "des Châtaigniers, " * 120
        return {
            "customer_id": customer_id or rng.randrange(1, self.sizes.customers + 1),
            "id": i,
            "street": street,
            "postcode": None if i % 9 == 0 else rng.choice(["01234", "SW1A 1AA", "〒100-0001"]),
            "city": rng.choice(CITIES),
        }

    # -- ledger ---------------------------------------------------------------------------

    def key_of(self, table: str, row: Row) -> Key:
        return tuple(row[c] for c in KEYS[table])

    def log(self, table: str, key: Key, what: str) -> None:
        self.history.setdefault((table, key), []).append(what)

    def put(self, table: str, row: Row, *, via_view: bool = False) -> None:
        key = self.key_of(table, row)
        self.log(table, key, "inserted" + (" through the view" if via_view else ""))
        self.rows[table][key] = dict(row)
        for p in planned(table):
            self._mark(table, key, p.column, via_view)
            if not via_view and row[p.column] is not None:
                self.pending.add((table, key, p.column))

    def change(self, table: str, key: Key, values: Row, *, via_view: bool = False) -> None:
        shown = ", ".join(f"{c}{'=NULL' if v is None else ''}" for c, v in values.items())
        self.log(table, key, f"set {shown}" + (" through the view" if via_view else ""))
        names = {p.column for p in planned(table)}
        row = self.rows[table][key]
        for column, value in values.items():
            if column not in names:
                row[column] = value
                continue
            cell = (table, key, column)
            if via_view:
                # The ciphertext is NULL while the cell is pending or both are NULL: NULL
                # written over it changes nothing, and the pending plaintext stays the truth.
                cipher_null = cell in self.pending or (
                    row[column] is None and cell not in self.via_view
                )
                if value is None and cipher_null:
                    self.log(table, key, f"(no change to {column}: NULL over a NULL ciphertext)")
                    continue
                self.pending.discard(cell)
            else:
                plaintext = None if cell in self.via_view else row[column]
                if value == plaintext:
                    self.log(table, key, f"(no change to {column}: the same plaintext)")
                    continue
                if value is None:
                    self.pending.discard(cell)
                else:
                    self.pending.add(cell)
            row[column] = value
            self._mark(table, key, column, via_view)

    def caught_up(self) -> None:
        """A catch-up run encrypted every pending plaintext."""
        self.pending.clear()

    def move(self, table: str, key: Key, values: Row) -> Key:
        """A key change (a payment moved to another partition): same row, new key."""
        row = self.rows[table].pop(key)
        row.update(values)
        new_key = self.key_of(table, row)
        self.history[(table, new_key)] = [
            *self.history.pop((table, key), ["generated"]),
            f"moved from {key}",
        ]
        self.rows[table][new_key] = row
        for p in planned(table):
            for cells in (self.via_view, self.pending):
                if (table, key, p.column) in cells:
                    cells.discard((table, key, p.column))
                    cells.add((table, new_key, p.column))
        return new_key

    def delete(self, table: str, key: Key) -> None:
        self.log(table, key, "deleted")
        del self.rows[table][key]
        self.deleted[table].add(key)
        for p in planned(table):
            self.via_view.discard((table, key, p.column))
            self.pending.discard((table, key, p.column))

    def _mark(self, table: str, key: Key, column: str, via_view: bool) -> None:
        if via_view:
            self.via_view.add((table, key, column))
        else:
            self.via_view.discard((table, key, column))

    def expected_plaintext(self, table: str, key: Key, column: str) -> Any:
        """What the plaintext column holds before step 5: NULL once written through the view."""
        if (table, key, column) in self.via_view:
            return None
        return self.rows[table][key][column]


# -- loading ----------------------------------------------------------------------------------


def bind(dialect: str, planned_type: str, value: Any) -> Any:
    """A planned value as a statement parameter (JSON as text; SQLite has no date/Decimal)."""
    if value is None:
        return None
    if planned_type == "json":
        return "null" if value is JSON_NULL else json.dumps(value, ensure_ascii=False)
    if dialect == "sqlite" and isinstance(value, dt.date | Decimal):
        return str(value)
    return value


def _bind_row(dialect: str, table: str, row: Row) -> Row:
    types = {p.column: p.type for p in planned(table)}
    return {
        name: bind(dialect, types.get(name, "string"), value)
        if name in types or isinstance(value, dt.date | Decimal)
        else value
        for name, value in row.items()
    }


def _insert_sql(dialect: str, table: str) -> str:
    columns = [*KEYS[table], *EXTRA[table], *(p.column for p in planned(table))]
    columns = list(dict.fromkeys(columns))
    values = [
        f"CAST(:{c} AS jsonb)"
        if dialect == "postgresql" and c in {p.column for p in planned(table) if p.type == "json"}
        else f":{c}"
        for c in columns
    ]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)})"


def create(engine: sa.Engine, shop: Shop) -> None:
    """The schema, filled with ``shop``'s generated rows."""
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for statement in DDL[dialect]:
            conn.exec_driver_sql(statement)
        for table in TABLES:
            rows = [_bind_row(dialect, table, row) for row in shop.rows[table].values()]
            for start in range(0, len(rows), 5000):
                conn.execute(sa.text(_insert_sql(dialect, table)), rows[start : start + 5000])
        for statement in AFTER_LOAD.get(dialect, []):
            conn.exec_driver_sql(statement)


# -- the application --------------------------------------------------------------------------


class Application:
    """The shop's code: one connection, writing while the operator works, and the ledger.

    ``burst`` runs bounded random operations: updates of planned plaintext,
    inserts, deletes (a customer with its payments and addresses), payments
    moved across partition bounds (into and out of the DEFAULT partition), and
    with ``views`` (after step 4 where views are updatable) writes of fresh ciphertext through
    the ``<table>_secure`` views next to plaintext writes to the tables. The
    ledger (``shop``) is changed only after the write committed.
    """

    def __init__(self, engine: sa.Engine, shop: Shop, *, seed: int) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.shop = shop
        self.rng = random.Random(seed)
        self.keyring: Keyring | None = None
        self.done: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self.hot: dict[str, list[Key]] = {}

    # -- running ----------------------------------------------------------------------------

    def burst(
        self,
        max_ops: int,
        *,
        views: bool = False,
        until: Callable[[], bool] | None = None,
        max_seconds: float = 60.0,
    ) -> Counter[str]:
        """At most ``max_ops`` operations, until ``until()`` says stop or time runs out."""
        if views and self.keyring is None:
            raise RuntimeError("writes through the views need the keyring")
        operations = self._operations(views)
        names = list(operations)
        weights = [operations[n][1] for n in names]
        done: Counter[str] = Counter()
        deadline = time.monotonic() + max_seconds
        with self.engine.connect() as conn:
            for _ in range(max_ops):
                if (until is not None and until()) or time.monotonic() > deadline:
                    break
                name = self.rng.choices(names, weights)[0]
                try:
                    committed = operations[name][0](conn)
                except sa.exc.OperationalError:  # deadlock / lock timeout: the app retries later
                    conn.rollback()
                    done["retried"] += 1
                    continue
                if committed:
                    done[name] += 1
        self.done.update(done)
        return done

    def start(self, max_ops: int, *, until: Callable[[], bool], views: bool = False) -> Burst:
        """``burst`` in a thread; errors are kept in ``errors`` for the test to raise."""
        thread = Burst(self, max_ops, until, views)
        thread.start()
        return thread

    def _operations(self, views: bool) -> dict[str, tuple[Callable[[sa.Connection], bool], int]]:
        table_ops: dict[str, tuple[Callable[[sa.Connection], bool], int]] = {
            "update customer": (self.update_customer, 30),
            "insert customer": (self.insert_customer, 6),
            "delete customer": (self.delete_customer, 3),
            "update payment": (self.update_payment, 15),
            "move payment": (self.move_payment, 12),
            "insert payment": (self.insert_payment, 6),
            "delete payment": (self.delete_payment, 4),
            "update address": (self.update_address, 10),
            "insert address": (self.insert_address, 4),
            "delete address": (self.delete_address, 3),
        }
        if not views:
            return table_ops
        return {
            **table_ops,
            "view update customer": (self.view_update_customer, 30),
            "view insert customer": (self.view_insert_customer, 6),
            "view update payment": (self.view_update_payment, 15),
            "view move payment": (self.view_move_payment, 6),
            "view insert payment": (self.view_insert_payment, 5),
            "view update address": (self.view_update_address, 10),
        }

    # -- helpers ----------------------------------------------------------------------------

    def _pick(self, table: str) -> Key | None:
        """A live row: half the time one of a few hot rows, so that one row sees several
        writes of different kinds (through the view, then to the table, moved, ...)."""
        rows = self.shop.rows[table]
        if not rows:
            return None
        hot = self.hot.setdefault(table, [])
        if len(hot) < HOT_ROWS:
            hot.append(self.rng.choice(list(rows)))
        key = self.rng.choice(hot)
        if self.rng.random() < 0.5 and key in rows:
            return key
        # Sampling a dict's keys: a list per pick is fine at these sizes (tens of thousands).
        key = self.rng.choice(list(rows))
        hot[self.rng.randrange(len(hot))] = key
        return key

    def _where(self, table: str, key: Key) -> tuple[str, Row]:
        names = KEYS[table]
        return (
            " AND ".join(f"{n} = :k_{n}" for n in names),
            {f"k_{n}": bind(self.dialect, "key", v) for n, v in zip(names, key, strict=True)},
        )

    def _set_sql(self, table: str, values: Row) -> tuple[str, Row]:
        types = {p.column: p.type for p in planned(table)}
        parts, params = [], {}
        for name, value in values.items():
            kind = types.get(name, "string")
            json_cast = self.dialect == "postgresql" and kind == "json"
            parts.append(
                f"{name} = CAST(:v_{name} AS jsonb)" if json_cast else f"{name} = :v_{name}"
            )
            params[f"v_{name}"] = bind(self.dialect, kind, value)
        return ", ".join(parts), params

    def _exec(self, conn: sa.Connection, sql: str, params: Row) -> int:
        return int(conn.execute(sa.text(sql), params).rowcount)

    def _fresh(self, table: str, i: int) -> Row:
        """New values for the planned columns of ``table`` (a fresh generated row's)."""
        if table == "customers":
            row = self.shop.customer(i, self.rng)
        elif table == "payments":
            row = self.shop.payment(i, self.rng)
        else:
            row = self.shop.address(i, self.rng)
        return {p.column: row[p.column] for p in planned(table)}

    def _subset(self, table: str, i: int) -> Row:
        fresh = self._fresh(table, i)
        chosen = [c for c in fresh if self.rng.random() < 0.5] or [self.rng.choice(list(fresh))]
        return {c: fresh[c] for c in chosen}

    def _new_id(self, table: str) -> int:
        self.shop.next_id[table] += 1
        return self.shop.next_id[table]

    def _customer_id(self) -> int | None:
        key = self._pick("customers")
        return None if key is None else int(key[0])

    # -- writes to the tables (plaintext) -----------------------------------------------------

    def write(
        self, conn: sa.Connection, table: str, key: Key, values: Row, *, via_view: bool = False
    ) -> bool:
        """Set planned ``values`` of row ``key``: plaintext to the table, or through the view
        the ciphertext (and token) the application computes itself."""
        where, keys = self._where(table, key)
        if via_view:
            sealed = self.seal(table, values)
            sets = ", ".join(f"{c} = :v_{c}" for c in sealed)
            params = {f"v_{c}": v for c, v in sealed.items()}
            target = f"{table}_secure"
        else:
            sets, params = self._set_sql(table, values)
            target = table
        if self._exec(conn, f"UPDATE {target} SET {sets} WHERE {where}", {**params, **keys}) != 1:
            conn.rollback()
            return False
        conn.commit()
        self.shop.change(table, key, values, via_view=via_view)
        return True

    def _update(self, conn: sa.Connection, table: str) -> bool:
        key = self._pick(table)
        if key is None:
            return False
        return self.write(conn, table, key, self._subset(table, int(key[-1]) + 7))

    def _insert(self, conn: sa.Connection, table: str, row: Row) -> bool:
        conn.execute(sa.text(_insert_sql(self.dialect, table)), _bind_row(self.dialect, table, row))
        conn.commit()
        self.shop.put(table, row)
        return True

    def _delete(self, conn: sa.Connection, table: str) -> bool:
        key = self._pick(table)
        if key is None:
            return False
        where, params = self._where(table, key)
        if self._exec(conn, f"DELETE FROM {table} WHERE {where}", params) != 1:
            conn.rollback()
            return False
        conn.commit()
        self.shop.delete(table, key)
        return True

    def update_customer(self, conn: sa.Connection) -> bool:
        return self._update(conn, "customers")

    def update_payment(self, conn: sa.Connection) -> bool:
        return self._update(conn, "payments")

    def update_address(self, conn: sa.Connection) -> bool:
        return self._update(conn, "addresses")

    def insert_customer(self, conn: sa.Connection) -> bool:
        return self._insert(
            conn, "customers", self.shop.customer(self._new_id("customers"), self.rng)
        )

    def insert_payment(self, conn: sa.Connection) -> bool:
        customer = self._customer_id()
        if customer is None:
            return False
        row = self.shop.payment(self._new_id("payments"), self.rng, customer_id=customer)
        return self._insert(conn, "payments", row)

    def insert_address(self, conn: sa.Connection) -> bool:
        customer = self._customer_id()
        if customer is None:
            return False
        row = self.shop.address(self._new_id("addresses"), self.rng, customer_id=customer)
        return self._insert(conn, "addresses", row)

    def delete_payment(self, conn: sa.Connection) -> bool:
        return self._delete(conn, "payments")

    def delete_address(self, conn: sa.Connection) -> bool:
        return self._delete(conn, "addresses")

    def delete_customer(self, conn: sa.Connection) -> bool:
        """The customer with its payments and addresses, in one transaction (the FK)."""
        key = self._pick("customers")
        if key is None:
            return False
        (customer,) = key
        conn.execute(sa.text("DELETE FROM addresses WHERE customer_id = :c"), {"c": customer})
        conn.execute(sa.text("DELETE FROM payments WHERE customer_id = :c"), {"c": customer})
        if self._exec(conn, "DELETE FROM customers WHERE id = :c", {"c": customer}) != 1:
            conn.rollback()
            return False
        conn.commit()
        for table in ("addresses", "payments"):
            for child in [
                k for k, r in self.shop.rows[table].items() if r["customer_id"] == customer
            ]:
                self.shop.delete(table, child)
        self.shop.delete("customers", key)
        return True

    def _other_partition_date(self, paid_on: dt.date) -> dt.date:
        """A date in another partition than ``paid_on``'s (DEFAULT included, both ways)."""
        here = payment_partition(paid_on, self.dialect)
        while True:
            candidate = PAID_FROM + dt.timedelta(days=self.rng.randrange(PAID_DAYS))
            if payment_partition(candidate, self.dialect) != here:
                return candidate

    def move_payment(self, conn: sa.Connection, *, via: str = "payments") -> bool:
        """paid_on across a partition bound: the server moves the row to the other partition."""
        key = self._pick("payments")
        if key is None:
            return False
        values: Row = {"paid_on": self._other_partition_date(key[0])}
        if via == "payments" and self.rng.random() < 0.5:
            values["amount"] = _amount(self.rng)  # moved and changed in one statement
        sets, params = self._set_sql("payments", values)
        where, keys = self._where("payments", key)
        if self._exec(conn, f"UPDATE {via} SET {sets} WHERE {where}", {**params, **keys}) != 1:
            conn.rollback()
            return False
        conn.commit()
        new_key = self.shop.move("payments", key, {"paid_on": values["paid_on"]})
        if "amount" in values:
            self.shop.change("payments", new_key, {"amount": values["amount"]})
        return True

    # -- writes through the <table>_secure views (PostgreSQL and MariaDB, after step 4) -------

    def seal(self, table: str, values: Row) -> Row:
        """The view's columns for ``values``: ciphertext under the plaintext's name, and tokens."""
        assert self.keyring is not None
        sealed: Row = {}
        for p in planned(table):
            if p.column not in values:
                continue
            value = values[p.column]
            if p.searchable:
                result = encmigrate.encrypt_field(
                    value,
                    searchable=True,
                    type=p.type,
                    context=p.context,
                    normalize=p.normalize,
                    keyring=self.keyring,
                )
                assert isinstance(result, encmigrate.Sealed)
                sealed[p.column], sealed[f"{p.column}_search"] = result
            else:
                sealed[p.column] = encmigrate.encrypt_field(
                    value, type=p.type, context=p.context, keyring=self.keyring
                )
        return sealed

    def _view_update(self, conn: sa.Connection, table: str) -> bool:
        key = self._pick(table)
        if key is None:
            return False
        values = self._subset(table, int(key[-1]) + 11)
        return self.write(conn, table, key, values, via_view=True)

    def interleavings(self, rows_each: int = 3) -> Counter[str]:
        """The write sequences a view-writing application produces, on purpose, per table.

        * a value written through the view, then NULL written to the table (the
          plaintext was NULL already: no change, the ciphertext stays the truth);
        * a value written to the table, then NULL written through the view before a
          catch-up ran (the ciphertext was NULL already: no change, the plaintext
          stays the truth and the catch-up encrypts it).
        NULL over NULL is no write: an application erases a value through the path
        that holds it (docs/application-writes.md). The ledger expects exactly that.
        """
        done: Counter[str] = Counter()
        cases = (("customers", "phone"), ("payments", "card_last4"), ("addresses", "postcode"))
        with self.engine.connect() as conn:
            for table, column in cases:
                for first_via_view in (True, False):
                    for _ in range(rows_each):
                        key = self.rng.choice(list(self.shop.rows[table]))
                        value = self._value(table, column)
                        if self.write(
                            conn, table, key, {column: value}, via_view=first_via_view
                        ) and self.write(
                            conn, table, key, {column: None}, via_view=not first_via_view
                        ):
                            done[
                                "view then table NULL" if first_via_view else "table then view NULL"
                            ] += 1
        self.done.update(done)
        return done

    def _value(self, table: str, column: str) -> Any:
        """A fresh non-NULL value for ``column``."""
        while True:
            self.shop.serial += 1
            value = self._fresh(table, self.shop.serial)[column]
            if value is not None:
                return value

    def _view_insert(self, conn: sa.Connection, table: str, row: Row) -> bool:
        sealed = self.seal(table, row)
        unplanned = {c: row[c] for c in (*KEYS[table], *EXTRA[table])}
        columns = {**unplanned, **sealed}
        sql = (
            f"INSERT INTO {table}_secure ({', '.join(columns)}) "
            f"VALUES ({', '.join(f':{c}' for c in columns)})"
        )
        conn.execute(sa.text(sql), columns)
        conn.commit()
        self.shop.put(table, row, via_view=True)
        return True

    def view_update_customer(self, conn: sa.Connection) -> bool:
        return self._view_update(conn, "customers")

    def view_update_payment(self, conn: sa.Connection) -> bool:
        return self._view_update(conn, "payments")

    def view_update_address(self, conn: sa.Connection) -> bool:
        return self._view_update(conn, "addresses")

    def view_insert_customer(self, conn: sa.Connection) -> bool:
        row = self.shop.customer(self._new_id("customers"), self.rng)
        return self._view_insert(conn, "customers", row)

    def view_insert_payment(self, conn: sa.Connection) -> bool:
        customer = self._customer_id()
        if customer is None:
            return False
        row = self.shop.payment(self._new_id("payments"), self.rng, customer_id=customer)
        return self._view_insert(conn, "payments", row)

    def view_move_payment(self, conn: sa.Connection) -> bool:
        return self.move_payment(conn, via="payments_secure")


class Burst(threading.Thread):
    """One application burst in the background."""

    def __init__(
        self, app: Application, max_ops: int, until: Callable[[], bool], views: bool
    ) -> None:
        super().__init__(daemon=True)
        self.app, self.max_ops, self.until, self.views = app, max_ops, until, views
        self.counts: Counter[str] = Counter()

    def run(self) -> None:
        try:
            self.counts = self.app.burst(self.max_ops, views=self.views, until=self.until)
        except BaseException as exc:  # re-raised by the test, not lost in the thread
            self.app.errors.append(exc)


# -- reading back -----------------------------------------------------------------------------


def text_expression(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        return f"{column}::text"
    return f"CAST({column} AS {'CHAR' if dialect == 'mysql' else 'TEXT'})"


def canonical(dialect: str, planned_type: str, text: str | None) -> Any:
    """A column's text form, comparable: exact text, except where only the value is kept.

    jsonb keeps no spelling (compared parsed; a JSON null stays apart from SQL
    NULL; a text column's non-JSON text stays apart from every document);
    SQLite stores numerics as REAL/INTEGER (compared as numbers).
    """
    if text is None:
        return None
    if planned_type == "json":
        try:
            return ("json", _json_key(json.loads(text)))
        except json.JSONDecodeError:
            return ("not JSON", text)
    if planned_type == "numeric" and dialect == "sqlite":
        return Decimal(text).normalize()
    return text


def _json_key(document: Any) -> str:
    """One spelling per JSON document (key order aside), so equal documents digest alike."""
    return json.dumps(document, sort_keys=True, ensure_ascii=False)


def expected_canonical(dialect: str, planned_type: str, value: Any) -> Any:
    """The canonical text form the column must show for an expected Python value."""
    if value is None:
        return None
    if planned_type == "json":
        return ("json", _json_key(None if value is JSON_NULL else value))
    if planned_type == "numeric":
        return Decimal(value).normalize() if dialect == "sqlite" else str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def read_text_forms(conn: sa.Connection, table: str) -> dict[Key, tuple[Any, ...]]:
    """Every row's key and its planned plaintext columns' canonical text forms."""
    dialect = conn.dialect.name
    columns = planned(table)
    keys = KEYS[table]
    sql = (
        f"SELECT {', '.join(keys)}, "
        + ", ".join(text_expression(dialect, p.column) for p in columns)
        + f" FROM {table}"
    )
    found: dict[Key, tuple[Any, ...]] = {}
    for row in conn.execute(sa.text(sql)):
        key = _key(dialect, table, tuple(row[: len(keys)]))
        found[key] = tuple(
            canonical(dialect, p.type, text)
            for p, text in zip(columns, row[len(keys) :], strict=True)
        )
    return found


def _key(dialect: str, table: str, raw: Key) -> Key:
    """Keys as the ledger holds them (SQLite returns dates in keys as text)."""
    if table == "payments" and isinstance(raw[0], str):
        return (dt.date.fromisoformat(raw[0]), *raw[1:])
    return raw


def read_ciphertexts(conn: sa.Connection, table: str) -> Iterator[tuple[Key, dict[str, Any]]]:
    """Every row's key and its ``<col>_encrypted`` (and ``_search``) values."""
    keys = KEYS[table]
    columns = [f"{p.column}_encrypted" for p in planned(table)]
    columns += [f"{p.column}_search" for p in planned(table) if p.searchable]
    sql = f"SELECT {', '.join(keys)}, {', '.join(columns)} FROM {table}"
    for row in conn.execute(sa.text(sql)):
        values = {
            name: bytes(v) if isinstance(v, memoryview) else v
            for name, v in zip(columns, row[len(keys) :], strict=True)
        }
        yield _key(conn.dialect.name, table, tuple(row[: len(keys)])), values
