"""Keys made once on a fresh checkout: processes starting together all get the same whole key."""

import multiprocessing
import os

import pytest

from biogram.files import create_once

pytestmark = pytest.mark.engine_independent

PROCESSES = 8
FILES = 200


def _make_all(directory, barrier, results):
    barrier.wait()
    seen = []
    for index in range(FILES):
        mine = f"{os.getpid()}-{index}-".encode() * 20
        seen.append(create_once(directory / f"key-{index}", lambda mine=mine: mine))
    results.put(seen)


def test_processes_starting_together_each_read_the_one_whole_key(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    workers = [
        context.Process(target=_make_all, args=(tmp_path / "var", barrier, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    seen = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    for index in range(FILES):
        on_disk = (tmp_path / "var" / f"key-{index}").read_bytes()
        assert on_disk.endswith(f"-{index}-".encode())  # whole: one process's content
        assert [each[index] for each in seen] == [on_disk] * PROCESSES
    assert sorted(path.name for path in (tmp_path / "var").iterdir()) == sorted(
        f"key-{index}" for index in range(FILES)
    )  # no temporary file left behind


def test_an_existing_key_is_kept(tmp_path):
    (tmp_path / "key").write_bytes(b"kept")
    assert create_once(tmp_path / "key", lambda: b"new") == b"kept"
    assert (tmp_path / "key").read_bytes() == b"kept"


def test_a_made_key_is_readable_by_its_owner_only(tmp_path):
    create_once(tmp_path / "key", lambda: b"secret")
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
