"""The system check that refuses a task-queue configuration which would run tasks twice."""

import subprocess
import sys

import pytest
from django.conf import settings

from genhub.checks import q_cluster_check, redelivery_bound

GOOD = {"orm": "default", "workers": 4, "timeout": 900, "queue_limit": 2, "retry": 3600, "catch_up": False}


def errors_for(settings_fixture, **changes):
    settings_fixture.Q_CLUSTER = {**GOOD, **changes}
    return [e.id + ": " + e.msg for e in q_cluster_check(None)]


def test_the_shipped_configuration_passes():
    assert q_cluster_check(None) == []
    assert settings.Q_CLUSTER["retry"] > redelivery_bound(settings.Q_CLUSTER)


def test_a_good_configuration_passes(settings):
    assert errors_for(settings) == []


@pytest.mark.parametrize("changes, fragment", [
    ({"retry": 900}, "retry=900 must exceed 1800"),  # retry == timeout: re-delivered while running
    ({"retry": 1800}, "must exceed 1800"),  # equal to the bound is not enough
    ({"queue_limit": 16, "retry": 3600}, "must exceed 5400"),  # waiting in memory counts too
    ({"timeout": None}, "no 'timeout'"),
    ({"catch_up": True}, "catch_up must be False"),
    ({"queue_limit": 0}, "unbounded"),
    ({"orm": None}, "no 'orm' broker"),
])
def test_a_bad_q_cluster_is_rejected(settings, changes, fragment):
    assert any(fragment in error for error in errors_for(settings, **changes))


def test_alt_clusters_are_checked_with_their_overrides(settings):
    errors = errors_for(settings, ALT_CLUSTERS={"control": {"workers": 1, "queue_limit": 1, "timeout": 120,
                                                             "retry": 300}})
    assert any("Q_CLUSTER[control] retry=300 must exceed 360" in e for e in errors)


def test_startup_fails_with_a_bad_retry():
    result = subprocess.run([sys.executable, "manage.py", "check"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DEBUG": "1", "Q_RETRY": "900",
                                 "DATABASE_URL": "sqlite:////tmp/genhub-check.sqlite3"})
    assert result.returncode != 0
    assert "genhub.E001" in result.stderr


def test_a_stale_threshold_within_two_heartbeats_is_refused(settings):
    from genhub.checks import heartbeat_check

    assert heartbeat_check(None) == []
    settings.GENHUB_HEARTBEAT_SECONDS, settings.GENHUB_STALE_JOB_SECONDS = 5, 8
    assert [e.id for e in heartbeat_check(None)] == ["genhub.E004"]
