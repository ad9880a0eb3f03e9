"""The Makefile's destructive targets do what they say: `clean` keeps var/, `distclean` removes it."""

import subprocess

from conftest import BASE_DIR


def dry_run(target: str) -> str:
    """The commands `make <target>` would run, without running them."""
    run = subprocess.run(
        ["make", "-n", target], cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    return run.stdout


def test_make_clean_keeps_var_with_the_database_and_the_secret_key():
    commands = dry_run("clean")

    assert "rm -rf .venv" in commands
    assert " var" not in commands.replace("\n", " ").replace("/var/", "")


def test_make_distclean_says_what_it_deletes_then_removes_var():
    commands = dry_run("distclean")

    assert "deleting var/" in commands
    assert "rm -rf var" in commands
