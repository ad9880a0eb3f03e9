"""The client package (clients/js): its types checked by `tsc`, and its Node tests (node --test, the
`ws` package) against a live server that this test kills and restarts when they ask."""

import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connections

from accounts import logins
from conftest import BASE_DIR
from messaging import services

# The client, its types and the guide's quotes are what is tested here; the server behaviour its
# Node tests meet is tested on both databases elsewhere: `make test` runs this file once.
pytestmark = pytest.mark.engine_independent

PACKAGE = BASE_DIR / "clients" / "js"
TSC = PACKAGE / "node_modules" / ".bin" / "tsc"


def require_node_modules():
    if not TSC.exists() or not shutil.which("node"):
        pytest.fail("clients/js is not installed: `make js` (npm ci) installs it")


def tsc(*args, cwd=PACKAGE):
    return subprocess.run(
        [str(TSC), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_client_its_tests_and_the_guides_examples_type_check_strictly_against_the_protocol():
    require_node_modules()
    config = json.loads((PACKAGE / "tsconfig.json").read_text())["compilerOptions"]
    assert config["strict"] is True and config["checkJs"] is True
    assert not {"noImplicitAny", "strictNullChecks"} & config.keys()  # strict, all of it

    run = tsc("-p", "tsconfig.json", "--listFilesOnly")
    checked = {
        Path(line).relative_to(PACKAGE).as_posix()
        for line in run.stdout.split()
        if "node_modules" not in line
    }
    run = tsc("-p", "tsconfig.json")

    assert run.returncode == 0, run.stdout + run.stderr
    assert {
        "src/biogram-client.js",
        "src/protocol.d.ts",
        "test/client.test.mjs",
        "examples/hooks.ts",
        "examples/bot.mjs",
    } <= checked


def test_a_typescript_app_gets_the_packages_types_and_tsc_refuses_a_frame_field_it_lacks(tmp_path):
    """The package installed in an app (its files in node_modules), with the settings the guide
    gives: the JSDoc types reach the app, so reading a field the protocol lacks is an error."""
    require_node_modules()
    installed = tmp_path / "node_modules" / "@biogram" / "client"
    shutil.copytree(PACKAGE / "src", installed / "src")
    shutil.copy(PACKAGE / "package.json", installed)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "allowJs": True,
                    "maxNodeModuleJsDepth": 1,
                    "module": "NodeNext",
                    "moduleResolution": "NodeNext",
                    "target": "ES2022",
                    "lib": ["ES2022", "DOM"],
                    "types": [],
                },
                "include": ["app.ts"],
            }
        )
    )
    app = (
        'import { BiogramSocket } from "@biogram/client";\n'
        'import type { Message } from "@biogram/client/protocol";\n'
        'const client = new BiogramSocket({ url: "ws://127.0.0.1:8000/ws/chat/" });\n'
        "const texts: (string | null)[] = [];\n"
        'client.on("message", (message: Message) => texts.push(message.text));\n'
    )
    (tmp_path / "app.ts").write_text(app)
    typed = tsc("-p", "tsconfig.json", cwd=tmp_path)
    (tmp_path / "app.ts").write_text(app + 'client.on("message", (message) => message.body);\n')
    broken = tsc("-p", "tsconfig.json", cwd=tmp_path)

    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert broken.returncode != 0
    assert "Property 'body' does not exist on type 'Message'" in broken.stdout, broken.stdout


GUIDE = BASE_DIR / "docs" / "migrating-from-the-node-server.md"
QUOTE = re.compile(
    r"^( *)```(?:ts|js)\n\1// (clients/js/\S+)\n(.*?)^\1```", re.MULTILINE | re.DOTALL
)


def test_the_guides_code_is_quoted_word_for_word_from_the_type_checked_examples():
    quotes = QUOTE.findall(GUIDE.read_text())

    assert len(quotes) >= 12
    for indent, path, code in quotes:
        code = "".join(line.removeprefix(indent) for line in code.splitlines(keepends=True))
        assert code in (BASE_DIR / path).read_text(), (
            f"the guide's quote of {path} is not in it:\n{code}"
        )


def refresh_token(someone) -> str:
    return str(logins.refresh_token_for(logins.start_login(someone)))


class Control(http.server.ThreadingHTTPServer):
    """What the Node tests may ask of the test: POST /kill?messages=N, then POST /start."""

    def __init__(self, server, chat, sender):
        super().__init__(("127.0.0.1", 0), ControlHandler)
        self.live_server, self.chat, self.sender = server, chat, sender
        self.kills = self.starts = 0


class ControlHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        url = urlparse(self.path)
        control = self.server
        if url.path == "/kill":
            control.live_server.kill()  # SIGKILL: no goodbye to the sockets
            # Stored while the server is down, as another process would: only `sync` brings them.
            count = int(parse_qs(url.query).get("messages", ["0"])[0])
            try:
                for n in range(1, count + 1):
                    services.send_message(
                        sender=control.sender,
                        chat_id=control.chat.pk,
                        text=f"while you were away {n}",
                    )
            finally:
                connections.close_all()  # this thread's; the test's teardown flushes the database
            control.kills += 1
        elif url.path == "/start":
            control.live_server.start()  # the same port and database
            control.starts += 1
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


NODE_TESTS = 8


@pytest.mark.live
def test_the_node_client_connects_sends_retries_types_reads_refreshes_and_resumes_after_a_crash(
    start_live_server, user, other_user, chat
):
    require_node_modules()
    # Access tokens of 8 s: the client must refresh through `auth` to keep its socket.
    server = start_live_server(JWT_ACCESS_LIFETIME=8, RATE_LIMIT_ENABLED=0)
    control = Control(server, chat, other_user)
    thread = threading.Thread(target=control.serve_forever, daemon=True)
    thread.start()
    try:
        run = subprocess.run(
            ["node", "--test", "--test-reporter=spec", "test/"],
            cwd=PACKAGE,
            env={
                "PATH": str(Path(shutil.which("node")).parent) + ":/usr/bin:/bin",
                "BIOGRAM_URL": server.url,
                # A login each (its refresh token): the Node side gets access tokens from the
                # server itself, with the server's short lifetime.
                "BIOGRAM_ALICE": refresh_token(user),
                "BIOGRAM_BOB": refresh_token(other_user),
                "BIOGRAM_ALICE_ID": str(user.pk),
                "BIOGRAM_BOB_ID": str(other_user.pk),
                "BIOGRAM_CHAT": str(chat.pk),
                "BIOGRAM_CONTROL": f"http://127.0.0.1:{control.server_address[1]}",
            },
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        control.shutdown()
        control.server_close()

    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    assert re.search(rf"\bpass {NODE_TESTS}\n", run.stdout), run.stdout
    assert re.search(r"\bfail 0\n", run.stdout), run.stdout
    assert (control.kills, control.starts) == (1, 1)
