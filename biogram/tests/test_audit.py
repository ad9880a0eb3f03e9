"""`make audit` passes only when every pinned package was checked against an advisory database."""

import json
import os
import subprocess
import sys

import pytest

from biogram.audit import verdict
from messaging.testing import free_port

# The audit reads requirements.txt and an advisory database, not ours: `make test` runs it once.
pytestmark = pytest.mark.engine_independent


def report(*dependencies) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_a_report_where_every_package_was_checked_and_clean_passes():
    result = verdict(
        report({"name": "django", "version": "5.2.19", "vulns": []}, {"name": "redis", "vulns": []})
    )

    assert result.ok
    assert result.report() == "audit passed: 2 packages checked, no known vulnerability"


def test_a_package_that_could_not_be_checked_fails_the_audit_saying_so():
    result = verdict(
        report(
            {"name": "django", "vulns": []},
            {
                "name": "redis",
                "skip_reason": "Dependency not found on PyPI and could not be audited",
            },
        )
    )

    assert not result.ok
    assert result.report().startswith("AUDIT FAILED: could not check 1 of 2 packages (redis)")


def test_a_known_vulnerability_fails_the_audit_naming_it():
    result = verdict(
        report({"name": "django", "vulns": [{"id": "PYSEC-2026-1", "fix_versions": []}]})
    )

    assert not result.ok
    assert "django: PYSEC-2026-1" in result.report()


@pytest.mark.parametrize("output", ["", "not json", json.dumps({"dependencies": []})])
def test_an_empty_or_unreadable_report_is_not_a_pass(output):
    assert not verdict(output).ok


@pytest.mark.live
def test_the_audit_fails_saying_so_when_no_advisory_database_can_be_reached(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every lookup fails
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    env = {
        **os.environ,
        "HTTPS_PROXY": closed,
        "HTTP_PROXY": closed,
        "https_proxy": closed,
        "http_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
        "PIP_INDEX_URL": f"{closed}/simple",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }

    run = subprocess.run(
        [sys.executable, "-m", "biogram.audit", str(requirements)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )

    assert run.returncode != 0, run.stdout
    assert "AUDIT FAILED" in run.stdout
    assert "nothing is known" in run.stdout
    assert "audit passed" not in run.stdout
