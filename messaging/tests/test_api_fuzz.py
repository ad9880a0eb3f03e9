"""The REST API fuzzed from its own OpenAPI document (/api/schema/) by Schemathesis, against a real server."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_user, token_for
from messaging import services

pytestmark = pytest.mark.live

# Test cases per operation and phase: the whole run stays well under a minute.
EXAMPLES_PER_OPERATION = 25
CHECKS = [
    "not_a_server_error",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "status_code_conformance",
]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def fuzzed_server(start_live_server):
    """A server whose throttles and message rate limit do not hide the code behind them."""
    return start_live_server(
        THROTTLE_ANON="100000/min",
        THROTTLE_USER="100000/min",
        RATE_LIMIT_ENABLED=0,
        LOG_LEVEL="WARNING",
    )


def test_fuzzed_requests_never_get_a_server_error_or_an_answer_off_the_schema(
    fuzzed_server, tmp_path
):
    fuzzer = make_user("fuzzer")
    friend = make_user("friend")
    chat, _ = services.create_chat(creator=fuzzer, member_ids=[friend.pk])
    services.send_message(sender=friend, chat_id=chat.pk, text="something to read")

    # The CLI, in a directory of its own (it keeps a Hypothesis database in the working one).
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{fuzzed_server.url}/api/schema/",
            "--header",
            f"Authorization: Bearer {token_for(fuzzer)}",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
    )

    server_errors = [
        line for line in fuzzed_server.output().splitlines() if "Internal Server Error" in line
    ]
    assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-2000:]}\n{server_errors}"
    assert server_errors == []
