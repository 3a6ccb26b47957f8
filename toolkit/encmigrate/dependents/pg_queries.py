"""The PostgreSQL catalog queries :mod:`encmigrate.dependents.postgresql` reads dependents with.

Every value is a bound parameter (``:rel``, ``:att``, ``:oid``...). The few
that change with the server version are format strings whose ``{...}`` slots
take only the fixed fragments defined here, never a name.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "PG15_SCHEMA",
    "PG15_WHOLE",
    "PG_ATTRDEF",
    "PG_CLASS",
    "PG_CONSTRAINTS",
    "PG_DEPEND",
    "PG_FUNCTIONS",
    "PG_PARENT",
    "PG_PARTITION_KEY",
    "PG_PUBLICATIONS",
    "PG_PUBLICATION_REL",
    "PG_REWRITE",
    "PG_TREE",
    "PG_TRIGGER",
]

# The planned table and every partition or inheritance child holding the same column.
PG_TREE = sa.text(
    """
    WITH RECURSIVE tree(relid, depth) AS (
        SELECT CAST(:rel AS oid), 0
        UNION ALL
        SELECT h.inhrelid, tree.depth + 1
        FROM pg_inherits h JOIN tree ON h.inhparent = tree.relid
    )
    SELECT tree.relid, a.attnum, a.attinhcount,
           (pg_identify_object('pg_class'::regclass, tree.relid, 0)).identity
    FROM tree
    JOIN pg_class c ON c.oid = tree.relid
    JOIN pg_attribute a
      ON a.attrelid = tree.relid AND a.attname = :column AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p')
    ORDER BY tree.depth, tree.relid
    """
)

PG_DEPEND = sa.text(
    """
    SELECT DISTINCT d.classid::regclass::text AS catalog, d.objid, d.objsubid, d.deptype,
           o.type, o.identity
    FROM pg_depend d
    CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) AS o
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = :rel AND d.refobjsubid = :att
      AND d.deptype IN ('n', 'a')
      AND d.classid <> 'pg_constraint'::regclass
    ORDER BY 1, 2, 3
    """
)

PG_REWRITE = sa.text(
    """
    SELECT r.rulename, c.relkind, (pg_identify_object('pg_class'::regclass, c.oid, 0)).identity
    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
    WHERE r.oid = :oid
    """
)

PG_CLASS = sa.text(
    """
    SELECT c.relkind, i.indisunique,
           (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL) AS expression,
           (i.indnkeyatts = 1 AND i.indkey[0] = :att) AS single,
           EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid) AS attached
    FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid
    WHERE c.oid = :oid
    """
)

PG_ATTRDEF = sa.text(
    "SELECT (pg_identify_object('pg_class'::regclass, adrelid, adnum)).identity "
    "FROM pg_attrdef WHERE oid = :oid"
)

# {cloned}: whether the trigger is a partition's clone of its parent's (PostgreSQL 13+).
PG_TRIGGER = "SELECT tgname, tgisinternal, {cloned} AS cloned FROM pg_trigger WHERE oid = :oid"

PG_PUBLICATION_REL = sa.text(
    "SELECT p.pubname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
    "WHERE r.oid = :oid"
)

PG_CONSTRAINTS = sa.text(
    """
    SELECT c.contype,
           (pg_identify_object('pg_constraint'::regclass, c.oid, 0)).identity,
           (c.conrelid = :rel AND :att = ANY (c.conkey)) AS outgoing,
           (c.contype = 'f' AND c.confrelid = :rel AND :att = ANY (c.confkey)) AS incoming,
           cardinality(c.conkey) AS width,
           CASE WHEN c.contype = 'f' AND c.conrelid = :rel
                THEN (pg_identify_object('pg_class'::regclass, c.confrelid, 0)).identity
                WHEN c.contype = 'f'
                THEN (pg_identify_object('pg_class'::regclass, c.conrelid, 0)).identity
           END AS other,
           c.coninhcount > 0 AS inherited
    FROM pg_constraint c
    WHERE c.conparentid = 0
      AND ((c.conrelid = :rel AND :att = ANY (c.conkey))
           OR (c.contype = 'f' AND c.confrelid = :rel AND :att = ANY (c.confkey)))
    ORDER BY 2
    """
)

PG_PARTITION_KEY = sa.text(
    """
    SELECT 1 FROM pg_partitioned_table p
    WHERE p.partrelid = :rel
      AND (:att = ANY (CAST(p.partattrs AS int2[]))
           OR EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = :rel
                        AND d.objsubid = 0 AND d.refclassid = 'pg_class'::regclass
                        AND d.refobjid = :rel AND d.refobjsubid = :att))
    """
)

PG_PARENT = sa.text(
    "SELECT (pg_identify_object('pg_class'::regclass, inhparent, 0)).identity "
    "FROM pg_inherits WHERE inhrelid = :rel ORDER BY inhseqno LIMIT 1"
)

# Publications that send the whole table (FOR ALL TABLES, FOR TABLE without a column list,
# and from PostgreSQL 15 FOR TABLES IN SCHEMA): read from the catalogs directly, as the
# pg_publication_tables view lists every table of a FOR ALL TABLES publication (slow).
PG_PUBLICATIONS = """
    SELECT p.pubname FROM pg_publication p
    WHERE p.puballtables
       OR EXISTS (SELECT 1 FROM pg_publication_rel r
                  WHERE r.prpubid = p.oid AND r.prrelid = :rel{whole})
       {schema}
    ORDER BY 1
"""
PG15_WHOLE = " AND r.prattrs IS NULL"
PG15_SCHEMA = """OR EXISTS (SELECT 1 FROM pg_publication_namespace s
                  WHERE s.pnpubid = p.oid
                    AND s.pnnspid = (SELECT relnamespace FROM pg_class WHERE oid = :rel))"""

# Best effort: the body of a function in any language that keeps source text.
PG_FUNCTIONS = sa.text(
    """
    SELECT p.oid, (pg_identify_object('pg_proc'::regclass, p.oid, 0)).identity
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_language l ON l.oid = p.prolang
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_%'
      AND l.lanname NOT IN ('internal', 'c')
      AND p.proname NOT LIKE 'encmigrate\\_shadow%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend e
                      WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid
                        AND e.deptype = 'e')
      AND p.prosrc ~* :pattern
    ORDER BY 2
    """
)
