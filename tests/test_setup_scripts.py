"""The install scripts: the lock matches pyproject.toml; set-up never writes to stdout (alerts go there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
NOT_LOCKED = {"torch", "torchvision"}  # installed by version in setup.sh: a CUDA machine keeps its build


def locked_versions() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    out: dict[str, tuple[str, int]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            name = canonicalize_name(m.group(1))
            out[name] = (m.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = out[name]
            out[name] = (version, hashes + 1)
    return out


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(r) for r in names]


def test_lock_was_made_from_this_pyproject() -> None:
    recorded = re.search(r"^# pyproject-dependencies-sha256: (\w+)$", LOCK.read_text(), re.M)
    assert recorded, "requirements.lock has no pyproject-dependencies-sha256 line: run bash scripts/lock.sh"
    current = subprocess.run(
        [sys.executable, str(ROOT / "scripts/dependency_hash.py"), str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert recorded.group(1) == current, "pyproject.toml's dependencies changed: run bash scripts/lock.sh"


@pytest.mark.parametrize("requirement", project_requirements(), ids=lambda r: r.name)
def test_every_dependency_is_locked_in_its_range_with_hashes(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    locked = locked_versions()
    if name in NOT_LOCKED:
        assert name not in locked, f"{name} is installed by version in setup.sh, not from the lock"
        return
    assert name in locked, f"{name} is not in requirements.lock: run bash scripts/lock.sh"
    version, hashes = locked[name]
    assert requirement.specifier.contains(version, prereleases=True), f"{name} {version} not in {requirement}"
    assert hashes >= 1, f"{name} has no hash in requirements.lock"


def test_lock_leaves_out_the_cuda_runtime_of_a_torch_build() -> None:
    cuda = [n for n in locked_versions() if re.match(r"(nvidia-cu|nvidia-nv|cuda-|triton$)", n)]
    assert cuda == []


def test_installed_versions_are_the_locked_ones() -> None:
    from importlib.metadata import PackageNotFoundError, version

    wrong = []
    for name, (locked, _) in locked_versions().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != locked:
            wrong.append(f"{name}: installed {installed}, locked {locked}")
    assert wrong == [], "the venv drifted from requirements.lock (re-run bash scripts/setup.sh)"


def test_setup_sends_apt_and_pip_output_to_stderr(tmp_path: Path) -> None:
    """apt-get writes its progress to stdout; with set-up before `vigil replay` in demo.sh, it would land
    among the alerts. A dpkg that reports one package missing makes setup.sh take its apt path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg").write_text('#!/bin/sh\n[ "$2" = mosquitto ] && exit 1\nexit 0\n')
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "apt-get $*: Reading package lists..."\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    if os.geteuid() != 0:
        pytest.skip("setup.sh's apt path needs root (or sudo)")
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert "apt-get install" in run.stderr and "setup: ok" in run.stderr


def test_the_wheel_holds_every_module_template_and_preset(tmp_path: Path) -> None:
    """`pip install .` (the container images) installs what the repo runs: every subpackage's modules,
    the console's templates and static files, the evaluation presets."""
    import shutil
    import zipfile

    source = tmp_path / "src"  # a copy: a build/ folder left in the repo would hide what setuptools omits
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for top in ("pipeline", "stages"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("vigil-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    shipped = (".py", ".html", ".js", ".css", ".json")
    wanted = {
        str(p.relative_to(ROOT))
        for top in ("pipeline", "stages")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in shipped
    }
    assert wanted and not wanted - packed, sorted(wanted - packed)[:20]
