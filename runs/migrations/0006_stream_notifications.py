"""PostgreSQL: NOTIFY streams when events and log lines commit (runs/wakeups.py listens).

A trigger, not a call in each write path: NOTIFY is transactional, so it goes out at commit (never
before the rows are visible, never for a rollback) and it covers every insert, bulk ones too.
One notification per run per statement; PostgreSQL folds identical ones within a transaction.
"""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION furrow_notify_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('furrow_rows', TG_ARGV[0] || ':' || coalesce(run_id::text, ''))
    FROM (SELECT DISTINCT run_id FROM new_rows) AS runs;
    RETURN NULL;
END
$$;
"""

TRIGGERS = [
    f"""
CREATE TRIGGER furrow_{name}_notify AFTER INSERT ON {table}
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION furrow_notify_rows('{name}');
"""
    for name, table in (("event", "runs_event"), ("log", "runs_logline"))
]

DROP = """
DROP TRIGGER IF EXISTS furrow_event_notify ON runs_event;
DROP TRIGGER IF EXISTS furrow_log_notify ON runs_logline;
DROP FUNCTION IF EXISTS furrow_notify_rows();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)
        for sql in TRIGGERS:
            schema_editor.execute(sql)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("runs", "0005_event_hooks")]

    operations = [migrations.RunPython(create, drop)]
