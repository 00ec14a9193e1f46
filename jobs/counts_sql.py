"""The database triggers that keep `BatchCounts` and `Job.change_mark` (installed by a migration).

Why triggers and not the services: a job's status is changed by many set-based statements (claims,
the pumps' parking and un-parking, the caps, a batch cancel or retry, fallbacks, the stale sweep, the
admin, tests' factories). A trigger is the one place every one of them passes through, in the same
transaction and with no extra round trip, so the counts are exact by construction, not by everyone
remembering to call a helper.

PostgreSQL: statement-level triggers with transition tables, so an UPDATE of 1,000 jobs costs one
aggregate and one upsert per batch it touched, not 1,000 row triggers. The upsert takes the counter rows
in batch-id order, so two statements touching the same batches cannot deadlock on them; a statement
that changes no count (a heartbeat) writes nothing and locks nothing. SQLite (the zero-setup `./dev
run`): plain row triggers; it has one writer at a time anyway.

`change_mark` (the live page's `?since=` cursor, see jobs/changes.py) is the id of the transaction that
last changed what a job's card shows, on PostgreSQL; a per-batch counter on SQLite.
"""

from jobs.models import Job

STATUSES = list(Job.Status.values)
# The `deadline:` that starts the reason of a job the deadline planner moved (jobs.deadline.DEADLINE_REASON;
# a test holds them equal: counts_sql is imported by migrations and must not import the planner).
DEADLINE_REASON = "deadline:"
# Counts beyond the statuses: what the ETA, the deadline planner and the batch page ask of every batch, as a
# condition on a job row (`{row}` is the row's prefix: "" in a statement trigger, "NEW." in a row trigger).
# Counting them here costs the write a few more sums over the rows it changed; counting them at read time
# cost every page and poll of a 10,000-job batch a scan of its jobs (and the ETA one of every older batch).
CONDITIONS = {
    "n_fal_in_flight": "{row}provider = 'fal' AND {row}status IN ('queued', 'running')",
    "n_gpu_waiting": "{row}provider = 'vastai' AND {row}status IN ('queued', 'waiting_for_gpu')",
    "n_gpu_running": "{row}provider = 'vastai' AND {row}status = 'running'",
    # substr, not LIKE: the same on both databases, and no `%` for a driver to take as a placeholder.
    "n_deadline_moved": f"substr({{row}}fallback_reason, 1, {len(DEADLINE_REASON)}) = '{DEADLINE_REASON}'",
}
# Migration 0008 installed the triggers before CONDITIONS existed; it passes this to stay what it was.
NO_CONDITIONS: dict = {}


def counters(conditions: dict) -> list[str]:
    return ["n_total"] + [f"n_{status}" for status in STATUSES] + ["cost_usd", "wasted_usd"] + list(conditions)


COUNTERS = counters(CONDITIONS)
# What a job's card and the API show: a change to any of these is a change the live page must get.
# (heartbeat_at, dispatch_token and the like change all the time and show nothing.)
VISIBLE = ["status", "progress", "attempts", "max_attempts", "error_code", "error_message", "paused_reason",
           "fallback_from", "fallback_reason", "output_video", "poster", "cost_usd", "wasted_usd", "queue_position",
           "remote_started_at", "instance_id", "provider", "finished_at", "started_at", "video_frames"]


def _aggregates(source: str, conditions: dict) -> str:
    """One row per batch: the signed change of each counter in `source` (batch_id, status, n, cost, wasted,
    and one column per condition)."""
    per_status = ", ".join(f"COALESCE(SUM(n) FILTER (WHERE status = '{s}'), 0) AS n_{s}" for s in STATUSES)
    extra = "".join(f", SUM({name}) AS {name}" for name in conditions)
    return (f"SELECT batch_id, SUM(n) AS n_total, {per_status}, SUM(cost) AS cost_usd, SUM(wasted) AS wasted_usd"
            f"{extra} FROM ({source}) AS d GROUP BY batch_id")


def _rows(table: str, sign: int, conditions: dict) -> str:
    extra = "".join(f", CASE WHEN {condition.format(row='')} THEN {sign} ELSE 0 END AS {name}"
                    for name, condition in conditions.items())
    return (f"SELECT batch_id, status, {sign} AS n, {sign} * COALESCE(cost_usd, 0) AS cost, "
            f"{sign} * wasted_usd AS wasted{extra} FROM {table}")


def _upsert(source: str, conditions: dict) -> str:
    names = counters(conditions)
    changed = " OR ".join(f"a.{name} <> 0" for name in names)
    columns = ", ".join(["batch_id"] + names)
    add = ", ".join(f"{name} = c.{name} + EXCLUDED.{name}" for name in names)
    return (f"INSERT INTO jobs_batchcounts AS c ({columns}) "
            f"SELECT {', '.join('a.' + name for name in ['batch_id'] + names)} "
            f"FROM ({_aggregates(source, conditions)}) AS a WHERE {changed} ORDER BY a.batch_id "
            f"ON CONFLICT (batch_id) DO UPDATE SET {add};")


def _postgresql(conditions: dict) -> list[str]:
    new, old = _rows("new_rows", 1, conditions), _rows("old_rows", -1, conditions)
    # Deleting jobs only ever subtracts, and must not recreate the row of a batch being deleted.
    sub = ", ".join(f"{name} = c.{name} + a.{name}" for name in counters(conditions))
    delete = (f"UPDATE jobs_batchcounts AS c SET {sub} FROM ({_aggregates(old, conditions)}) AS a "
              f"WHERE c.batch_id = a.batch_id;")
    visible_old = ", ".join(f"OLD.{name}" for name in VISIBLE)
    visible_new = ", ".join(f"NEW.{name}" for name in VISIBLE)
    return [
        f"""CREATE OR REPLACE FUNCTION jobs_counts_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN {_upsert(new, conditions)} RETURN NULL; END $$;""",
        f"""CREATE OR REPLACE FUNCTION jobs_counts_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN {_upsert(new + " UNION ALL " + old, conditions)} RETURN NULL; END $$;""",
        f"""CREATE OR REPLACE FUNCTION jobs_counts_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN {delete} RETURN NULL; END $$;""",
        "CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs_job REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_on_insert();",
        "CREATE TRIGGER jobs_counts_update AFTER UPDATE ON jobs_job REFERENCING OLD TABLE AS old_rows "
        "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_on_update();",
        "CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs_job REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION jobs_counts_on_delete();",
        # A batch has its row from the start, so the batch list never needs a LEFT JOIN or a fallback.
        """CREATE OR REPLACE FUNCTION jobs_counts_on_batch() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO jobs_batchcounts (batch_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
            RETURN NULL; END $$;""",
        "CREATE TRIGGER jobs_counts_batch AFTER INSERT ON jobs_batchrun FOR EACH ROW "
        "EXECUTE FUNCTION jobs_counts_on_batch();",
        # The writing transaction's id (64-bit, never wraps): jobs/changes.py explains the cursor.
        f"""CREATE OR REPLACE FUNCTION jobs_change_mark() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'INSERT' OR ROW({visible_old}) IS DISTINCT FROM ROW({visible_new}) THEN
                NEW.change_mark := pg_current_xact_id()::text::bigint;
              END IF;
              RETURN NEW;
            END $$;""",
        "CREATE TRIGGER jobs_change_mark BEFORE INSERT OR UPDATE ON jobs_job FOR EACH ROW "
        "EXECUTE FUNCTION jobs_change_mark();",
    ]


def _sqlite(conditions: dict) -> list[str]:
    def delta(row: str, sign: str) -> str:
        parts = [f"n_total = n_total {sign} 1"]
        parts += [f"n_{s} = n_{s} {sign} ({row}.status = '{s}')" for s in STATUSES]
        parts += [f"{name} = {name} {sign} ({condition.format(row=row + '.')})"
                  for name, condition in conditions.items()]
        parts += [f"cost_usd = cost_usd {sign} COALESCE({row}.cost_usd, 0)",
                  f"wasted_usd = wasted_usd {sign} {row}.wasted_usd"]
        return f"UPDATE jobs_batchcounts SET {', '.join(parts)} WHERE batch_id = {row}.batch_id;"

    changed = " OR ".join(f"OLD.{name} IS NOT NEW.{name}" for name in VISIBLE)
    mark = ("UPDATE jobs_job SET change_mark = (SELECT COALESCE(MAX(change_mark), 0) + 1 FROM jobs_job "
            "WHERE batch_id = NEW.batch_id) WHERE id = NEW.id;")
    return [
        "CREATE TRIGGER jobs_counts_batch AFTER INSERT ON jobs_batchrun BEGIN "
        "INSERT OR IGNORE INTO jobs_batchcounts (batch_id) VALUES (NEW.id); END;",
        f"CREATE TRIGGER jobs_counts_insert AFTER INSERT ON jobs_job BEGIN "
        f"INSERT OR IGNORE INTO jobs_batchcounts (batch_id) VALUES (NEW.batch_id); {delta('NEW', '+')} {mark} END;",
        f"CREATE TRIGGER jobs_counts_update AFTER UPDATE ON jobs_job BEGIN {delta('OLD', '-')} {delta('NEW', '+')} "
        f"END;",
        f"CREATE TRIGGER jobs_change_mark AFTER UPDATE ON jobs_job WHEN {changed} BEGIN {mark} END;",
        f"CREATE TRIGGER jobs_counts_delete AFTER DELETE ON jobs_job BEGIN {delta('OLD', '-')} END;",
    ]


def install_sql(vendor: str, conditions: dict = CONDITIONS) -> list[str]:
    return _postgresql(conditions) if vendor == "postgresql" else _sqlite(conditions)


def uninstall_sql(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return ["DROP TRIGGER IF EXISTS jobs_counts_insert ON jobs_job;",
                "DROP TRIGGER IF EXISTS jobs_counts_update ON jobs_job;",
                "DROP TRIGGER IF EXISTS jobs_counts_delete ON jobs_job;",
                "DROP TRIGGER IF EXISTS jobs_change_mark ON jobs_job;",
                "DROP TRIGGER IF EXISTS jobs_counts_batch ON jobs_batchrun;"]
    return [f"DROP TRIGGER IF EXISTS {name};" for name in
            ("jobs_counts_batch", "jobs_counts_insert", "jobs_counts_update", "jobs_change_mark",
             "jobs_counts_delete")]


def backfill_sql(conditions: dict = CONDITIONS) -> str:
    """Counts for the batches that exist when the triggers are installed (one aggregate; both databases)."""
    columns = ", ".join(["batch_id"] + counters(conditions))
    per_status = ", ".join(f"COALESCE(SUM(CASE WHEN j.status = '{s}' THEN 1 ELSE 0 END), 0)" for s in STATUSES)
    extra = "".join(f", COALESCE(SUM(CASE WHEN {condition.format(row='j.')} THEN 1 ELSE 0 END), 0)"
                    for condition in conditions.values())
    return (f"INSERT INTO jobs_batchcounts ({columns}) SELECT b.id, COUNT(j.id), {per_status}, "
            f"COALESCE(SUM(j.cost_usd), 0), COALESCE(SUM(j.wasted_usd), 0){extra} "
            f"FROM jobs_batchrun b LEFT JOIN jobs_job j ON j.batch_id = b.id GROUP BY b.id;")


def refill_sql(conditions: dict = CONDITIONS) -> str:
    """The `conditions` counters of every existing batch, counted once (a migration that adds counters)."""
    sets = ", ".join(f"{name} = (SELECT COUNT(*) FROM jobs_job j WHERE j.batch_id = jobs_batchcounts.batch_id "
                     f"AND {condition.format(row='j.')})" for name, condition in conditions.items())
    return f"UPDATE jobs_batchcounts SET {sets};"
