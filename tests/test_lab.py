"""`make lab` as a learner meets it: the lab shows the whole course, opens lesson 00, and asks no
question on first start.

The test runs `make lab` itself (the Makefile's own recipe and command line, not a copy), with
JupyterLab from the environment that runs the tests, on a free localhost port, without a browser,
and with empty user settings and workspaces (a first start). Through the server's REST API it
checks what the learner's lab would show:

* the server's root is the course folder: ``exercises/``, ``solutions/`` and
  ``notebooks/00_einops.ipynb`` open (the README's next step after lesson 00 is an exercise);
* the URL the server prints, and the line the Makefile prints, lead to lesson 00
  (``/lab/tree/notebooks/00_einops.ipynb``, which the lab page opens as its ``treePath``);
* the news question is off: JupyterLab asks "Would you like to get notified about official
  Jupyter news?" exactly when the setting ``fetchNews`` of
  ``@jupyterlab/apputils-extension:notification`` is ``"none"`` (its schema's default), and the
  course's ``.jupyter/lab/settings/overrides.json`` makes its default ``"false"``.

The server is stopped (its whole process group) whatever happens, within a bounded time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from attn_tutorial.course import ROOT

LESSON_00 = "notebooks/00_einops.ipynb"
NEWS_PLUGIN = "@jupyterlab/apputils-extension:notification"
START_S = 120    # a cold JupyterLab start on a loaded 2-core machine takes ~10-30 s
STOP_S = 20

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the Makefile is for POSIX shells")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# a `make test` around this test must not pass its own flags (jobserver, -n, variables) to `make lab`
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def _make_lab(extra: str, dry_run: bool) -> list[str]:
    """`make lab` with JupyterLab from this test's environment (VENV) and nothing to install
    (STAMP empty: the environment is already set up)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("`make` is not installed")
    return [make, "-s", *(["-n"] if dry_run else []), "-C", str(ROOT), "lab",
            f"VENV={sys.prefix}", "STAMP=", f"LAB_ARGS={extra}"]


def _the_makefiles_lab_command() -> list[str]:
    """The `jupyter lab …` line of the Makefile's recipe, as make expands it."""
    out = subprocess.run(_make_lab("", dry_run=True), capture_output=True, text=True, check=True,
                         timeout=60, env=MAKE_ENV).stdout
    lines = [line for line in out.splitlines() if "/bin/jupyter lab" in line]
    assert len(lines) == 1, f"one `jupyter lab` line expected in `make -n lab`:\n{out}"
    return shlex.split(lines[0])


def test_make_lab_serves_the_course_root_with_lesson_00_open(tmp_path: Path):
    """A first start: Makefile's command line, a free port, no browser, empty user settings."""
    jupyter = Path(sys.prefix) / "bin" / "jupyter"
    if not jupyter.exists():
        pytest.skip(f"no JupyterLab in this environment ({jupyter})")
    port, token = _free_port(), secrets.token_hex(16)
    extra = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} "
             f"--ServerApp.port_retries=0 --IdentityProvider.token={token}")
    first_start = tmp_path
    env = dict(MAKE_ENV,
               JUPYTERLAB_SETTINGS_DIR=str(first_start / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(first_start / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(first_start / "runtime"))
    log_path = first_start / "lab.log"

    def get(path: str) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            body = reply.read().decode()
        return json.loads(body) if path.startswith(("/api", "/lab/api")) else {"html": body}

    with open(log_path, "w") as log:
        lab = subprocess.Popen(_make_lab(extra, dry_run=False), cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                get("/api/status")
                break
            except (OSError, urllib.error.URLError):
                assert lab.poll() is None, f"`make lab` exited ({lab.returncode}):\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"no lab after {START_S} s:\n{log_path.read_text()}"
                time.sleep(0.25)

        # the whole course is reachable: the root, the exercises, the solutions, lesson 00
        root = {item["name"] for item in get("/api/contents?content=1")["content"]}
        assert {"notebooks", "exercises", "solutions", "attn_tutorial"} <= root, root
        for folder in ("exercises", "solutions"):
            listing = get(f"/api/contents/{folder}?content=1")
            assert listing["type"] == "directory"
            served = {item["name"] for item in listing["content"] if item["name"].endswith(".ipynb")}
            on_disk = {p.name for p in (ROOT / folder).glob("*.ipynb")}
            assert served == on_disk and "00_einops.ipynb" in served, (folder, served, on_disk)
        assert get(f"/api/contents/{LESSON_00}?content=0")["type"] == "notebook"

        # the URL the server prints, and the Makefile's own line, lead to lesson 00
        deadline = time.monotonic() + STOP_S
        while f"127.0.0.1:{port}/" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.25)
        printed = log_path.read_text()
        urls = re.findall(rf"http://127\.0\.0\.1:{port}(/\S*)", printed)
        assert urls, f"the server printed no URL:\n{printed}"
        assert all(u.split("?")[0] == f"/lab/tree/{LESSON_00}" for u in urls), urls
        assert f"/lab/tree/{LESSON_00}" in printed.splitlines()[0], printed.splitlines()[0]
        page = get(f"/lab/tree/{LESSON_00}")["html"]
        assert re.search(rf'"treePath":\s*"{re.escape(LESSON_00)}"', page), "the lab page opens no file"

        # no news question on first start: the served default is "false", the user has set nothing
        news = get(f"/lab/api/settings/{NEWS_PLUGIN}")
        schema_file = json.loads(
            (Path(sys.prefix) / "share/jupyter/lab/schemas/@jupyterlab/apputils-extension"
             / "notification.json").read_text())
        assert schema_file["properties"]["fetchNews"]["default"] == "none"     # JupyterLab asks
        assert "fetchNews" not in news["settings"]                              # a first start
        assert news["schema"]["properties"]["fetchNews"]["default"] == "false"  # the course's
    finally:
        try:
            os.killpg(lab.pid, signal.SIGTERM)
            lab.wait(STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait(STOP_S)
        except ProcessLookupError:
            pass


def test_the_readme_starts_the_lab_as_the_makefile_does():
    """The README's conda instructions run `jupyter lab` with the Makefile's flags."""
    command = _the_makefiles_lab_command()
    flags = [a for a in command if a.startswith("--") and a != "--allow-root"]
    assert any(f.startswith("--LabApp.default_url=") for f in flags), command
    expected = " ".join(["jupyter lab", *flags])
    readme = (ROOT / "README.md").read_text()
    assert expected in " ".join(readme.replace("\\\n", " ").split()), (
        f"README.md should start the lab as the Makefile does: {expected}")
