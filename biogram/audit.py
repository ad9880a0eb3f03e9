"""`make audit`: audit the pinned requirements for known vulnerabilities, honestly.

pip-audit exits 0 when it could not look a package up ("Dependency not found on
PyPI and could not be audited"), so on a machine that cannot reach an advisory
database it "passes" having audited nothing. This wrapper runs pip-audit with
JSON output against each vulnerability service in turn and passes only when
every pinned package was actually checked and none has a known vulnerability.

    python -m biogram.audit [requirements.txt ...]
"""

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("pypi", "osv")


@dataclass
class Verdict:
    ok: bool
    checked: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    vulnerable: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""

    def report(self) -> str:
        if self.error:
            return f"AUDIT FAILED: could not check the packages: {self.error}"
        if self.skipped:
            names = ", ".join(sorted(self.skipped))
            return (
                f"AUDIT FAILED: could not check {len(self.skipped)} of "
                f"{len(self.skipped) + len(self.checked)} packages ({names}); "
                f"first reason: {next(iter(self.skipped.values()))}"
            )
        if self.vulnerable:
            lines = [f"  {name}: {', '.join(ids)}" for name, ids in sorted(self.vulnerable.items())]
            return "AUDIT FAILED: known vulnerabilities:\n" + "\n".join(lines)
        return f"audit passed: {len(self.checked)} packages checked, no known vulnerability"


def verdict(pip_audit_json: str) -> Verdict:
    """What one pip-audit JSON report says: ok only if every package was checked and clean."""
    try:
        report = json.loads(pip_audit_json)
        dependencies = report["dependencies"]
    except (ValueError, KeyError, TypeError) as exc:
        return Verdict(ok=False, error=f"unreadable pip-audit output ({exc})")
    if not dependencies:
        return Verdict(ok=False, error="pip-audit reported no package at all")
    result = Verdict(ok=True)
    for dependency in dependencies:
        name = dependency.get("name", "?")
        if dependency.get("skip_reason"):
            result.skipped[name] = dependency["skip_reason"]
            continue
        result.checked.append(name)
        ids = [v.get("id", "?") for v in dependency.get("vulns", [])]
        if ids:
            result.vulnerable[name] = ids
    result.ok = not result.skipped and not result.vulnerable
    return result


def run_pip_audit(requirements: list[str], service: str) -> Verdict:
    command = [sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off"]
    command += ["-s", service]
    for path in requirements:
        command += ["-r", path]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return Verdict(ok=False, error=f"pip-audit ({service}) timed out")
    result = verdict(run.stdout)
    if run.returncode not in (0, 1) or (result.error and not run.stdout.strip()):
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return Verdict(ok=False, error=f"pip-audit ({service}) exited {run.returncode}: {last}")
    return result


def main(argv: list[str]) -> int:
    requirements = argv or [str(Path(__file__).resolve().parent.parent / "requirements.txt")]
    results = []
    for service in SERVICES:
        result = run_pip_audit(requirements, service)
        print(f"[{service}] {result.report()}")
        if result.ok or result.vulnerable:
            return 0 if result.ok else 1
        results.append(result)
    print("AUDIT FAILED: no vulnerability service could check every package; nothing is known")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
