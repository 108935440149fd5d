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
    listed = {_name(r) for r in env[pip_start + 1:] if not r.startswith("-")}
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


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def test_the_cpu_build_of_torch_is_installed_everywhere():
    """The Makefile, environment.yml and the README install torch from the PyTorch CPU index
    (the package index's default Linux wheel is the CUDA build), and the README says how to pick
    a CUDA build."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^TORCH_INDEX \?= {re.escape(CPU_INDEX)}$", makefile, re.M)
    install = [line for line in makefile.splitlines() if "$(TORCH)" in line and "install" in line
               or line.strip().startswith("$(PIP)") and "$(TORCH)" in line]
    assert install and all("--extra-index-url $(TORCH_INDEX)" in line for line in install), install
    assert f"--extra-index-url {CPU_INDEX}" in _environment_lines()
    env = _environment_lines()
    assert env.index(f"--extra-index-url {CPU_INDEX}") < env.index("torch==2.13.0")
    readme = (ROOT / "README.md").read_text()
    assert f"--extra-index-url {CPU_INDEX} torch==" in readme
    assert "make lab TORCH_INDEX=https://download.pytorch.org/whl/cu" in readme


def test_ci_lists_the_slowest_tests():
    assert '--durations=15' in (ROOT / ".ci" / "run").read_text()
    assert "$(PYTEST_ARGS)" in (ROOT / "Makefile").read_text()
