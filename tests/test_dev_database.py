"""`./dev run`'s zero-setup database is SQLite: its migrations must leave the count triggers in place.

SQLite adds or alters a column by remaking the table, which drops the table's triggers; a migration that
remakes `jobs_job` must install them again (0011 does), or the batch counts silently stop following."""

import re
import sqlite3
import subprocess
import sys

from jobs import counts_sql


def test_a_fresh_sqlite_database_has_every_count_trigger_after_all_migrations(tmp_path):
    database = tmp_path / "dev.sqlite3"
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "DEBUG": "1", "SECRET_KEY": "test",
                               "DATABASE_URL": f"sqlite:///{database}"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    wanted = set(re.findall(r"CREATE TRIGGER (\w+)", " ".join(counts_sql.install_sql("sqlite"))))
    with sqlite3.connect(database) as db:
        present = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert wanted and wanted <= present
