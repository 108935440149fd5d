"""The set-up files agree: environment.yml installs what pyproject.toml declares, with the same
torch pin as the Makefile and the README."""

from __future__ import annotations

import re
import tomllib

from attn_tutorial.course import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _environment_lines() -> list[str]:
    return [
        line.strip()[2:].strip()
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if line.strip().startswith("- ")
    ]


def test_environment_matches_pyproject():
    project = _pyproject()
    declared = {_name(r) for r in project["dependencies"]}
    for extra in ("test", "lab"):
        declared |= {_name(r) for r in project["optional-dependencies"][extra]}
    env = _environment_lines()
    pip_start = env.index("pip:")
    listed = {_name(r) for r in env[pip_start + 1:] if not r.startswith("-e")}
    assert listed == declared, (
        f"only in environment.yml: {sorted(listed - declared)}; "
        f"only in pyproject.toml: {sorted(declared - listed)}"
    )
    assert "-e .[lab,test]" in env


def test_environment_is_conda_forge_python_311():
    text = (ROOT / "environment.yml").read_text()
    channels = re.search(r"channels:\n((?:\s+- .*\n)+)", text).group(1).split()
    assert [c for c in channels if c != "-"] == ["conda-forge"]
    assert "python=3.11" in _environment_lines()


def test_torch_pin_is_the_same_everywhere():
    pins = {
        "environment.yml": re.findall(r"torch==([\d.]+)", (ROOT / "environment.yml").read_text()),
        "Makefile": re.findall(r"torch==([\d.]+)", (ROOT / "Makefile").read_text()),
        "README.md": re.findall(r"torch==([\d.]+)", (ROOT / "README.md").read_text()),
    }
    assert all(pins.values()), pins
    assert len({v for vs in pins.values() for v in vs}) == 1, pins
    assert any(_name(r) == "torch" for r in _pyproject()["dependencies"])


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
