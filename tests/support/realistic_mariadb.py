"""The shop of ``support.realistic_schema`` in the form MariaDB 10.11 allows.

The same tables, columns, keys and dependents where MariaDB has them, and what
stands in for what it has not:

* no DEFAULT partition for RANGE: ``payments`` is ``RANGE COLUMNS(paid_on)``
  with PostgreSQL's three yearly ranges, a first partition for everything
  before them and a ``MAXVALUE`` partition after them (``payments_default``);
* ``addresses`` is ``PARTITION BY HASH (customer_id)``: a row goes to
  partition ``customer_id MOD 3``, which the test computes on its own;
* InnoDB refuses foreign keys on partitioned tables (either end), so neither
  ``payments`` nor ``addresses`` references ``customers``; the unpartitioned
  ``customer_notes`` does (``ON DELETE CASCADE``; the application never writes
  it), so ``customers`` is still a referenced table through every step;
* no materialized view; the function is a one-statement SQL function, whose
  body ``information_schema.ROUTINES`` keeps as text;
* JSON is ``LONGTEXT`` with a ``json_valid`` CHECK; the generated column is
  ``STORED``; named CHECKs are table constraints (MariaDB names a column-level
  CHECK after its column);
* the application's ``customers_touch`` is a ``BEFORE UPDATE`` trigger, the
  event and timing of encmigrate's shadow trigger: the two must coexist.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

__all__ = ["AFTER_LOAD", "EARLY", "NOTE_EVERY", "ddl", "partition_counts"]

# Payments dated before the first yearly range (PostgreSQL's DEFAULT partition takes them).
EARLY = "payments_early"
# One note for every NOTE_EVERY-th generated customer.
NOTE_EVERY = 10


def ddl(ranges: tuple[tuple[str, dt.date, dt.date], ...], default: str, modulus: int) -> list[str]:
    """The statements, with the payment ``ranges`` and ``modulus`` address partitions."""
    bounds = [f"PARTITION {EARLY} VALUES LESS THAN ('{ranges[0][1]}')"]
    bounds += [f"PARTITION {name} VALUES LESS THAN ('{end}')" for name, _, end in ranges]
    bounds.append(f"PARTITION {default} VALUES LESS THAN (MAXVALUE)")
    hashed = ", ".join(f"PARTITION addresses_p{r}" for r in range(modulus))
    return [
        """
        CREATE TABLE customers (
            id BIGINT PRIMARY KEY,
            email VARCHAR(255) NOT NULL,
            full_name TEXT,
            phone VARCHAR(32),
            birth_date DATE,
            notes JSON,
            email_domain VARCHAR(255) AS (SUBSTRING_INDEX(email, '@', -1)) STORED,
            status VARCHAR(16) NOT NULL DEFAULT 'active',
            created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
            updated_at DATETIME(6),
            CONSTRAINT customers_email_key UNIQUE (email),
            CONSTRAINT full_name_not_blank CHECK (CHAR_LENGTH(full_name) > 0),
            CONSTRAINT status_known CHECK (status IN ('active', 'closed'))
        ) ENGINE=InnoDB
        """,
        # No column list on MariaDB either: it fires on the migrator's writes too.
        "CREATE TRIGGER customers_touch BEFORE UPDATE ON customers "
        "FOR EACH ROW SET NEW.updated_at = NOW(6)",
        "CREATE VIEW customer_directory AS "
        "SELECT id, full_name, email, email_domain FROM customers WHERE status = 'active'",
        "CREATE FUNCTION customer_label(customer BIGINT) RETURNS TEXT READS SQL DATA "
        "RETURN (SELECT COALESCE(full_name, '(no name)') FROM customers WHERE id = customer)",
        """
        CREATE TABLE customer_notes (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            customer_id BIGINT NOT NULL,
            body VARCHAR(100) NOT NULL,
            CONSTRAINT customer_notes_customer FOREIGN KEY (customer_id)
                REFERENCES customers (id) ON DELETE CASCADE
        ) ENGINE=InnoDB
        """,
        f"""
        CREATE TABLE payments (
            id BIGINT NOT NULL,
            paid_on DATE NOT NULL,
            customer_id BIGINT NOT NULL,
            card_last4 VARCHAR(4),
            amount DECIMAL(12, 2) NOT NULL,
            currency CHAR(3) NOT NULL DEFAULT 'EUR',
            PRIMARY KEY (paid_on, id),
            KEY payments_customer (customer_id),
            KEY payments_card_last4 (card_last4)
        ) ENGINE=InnoDB PARTITION BY RANGE COLUMNS (paid_on) ({", ".join(bounds)})
        """,
        f"""
        CREATE TABLE addresses (
            customer_id BIGINT NOT NULL,
            id BIGINT NOT NULL,
            street TEXT,
            postcode VARCHAR(16),
            city VARCHAR(64) NOT NULL,
            PRIMARY KEY (customer_id, id)
        ) ENGINE=InnoDB PARTITION BY HASH (customer_id) ({hashed})
        """,
    ]


AFTER_LOAD = [
    "INSERT INTO customer_notes (customer_id, body) "
    f"SELECT id, CONCAT('called back #', id) FROM customers WHERE MOD(id, {NOTE_EVERY}) = 0",
    "ANALYZE TABLE customers, customer_notes, payments, addresses",
]


def partition_counts(conn: sa.Connection, table: str) -> dict[str, int]:
    """Rows per partition of ``table``, counted in each partition (``PARTITION (p)``).

    ``information_schema.PARTITIONS.TABLE_ROWS`` is InnoDB's estimate: only
    the partition names are read from it.
    """
    names = (
        conn.execute(
            sa.text(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t "
                "ORDER BY PARTITION_ORDINAL_POSITION"
            ),
            {"t": table},
        )
        .scalars()
        .all()
    )
    counts = {
        str(name): int(
            conn.execute(sa.text(f"SELECT count(*) FROM {table} PARTITION ({name})")).scalar_one()
        )
        for name in names
    }
    return {name: count for name, count in counts.items() if count}
