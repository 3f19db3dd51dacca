"""Child Python processes of the tests: run in the repository's root, with an environment of the test's making."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def python_child(
    args: list[str], env: dict[str, str], *, stdin: str | None = None, new_session: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python <args>` in the repository's root with exactly `env` and `stdin`, its output read as text (two minutes
    at most); with `new_session`, in a session of its own: no controlling terminal, so getpass reads `stdin`."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=new_session,
        check=False,
    )
