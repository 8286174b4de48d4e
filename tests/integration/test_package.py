"""`pip install` of the package, as a user without Docker or the Makefile does it: build the wheel
from a copy of the checkout (pip's default build isolation, so pyproject.toml's build backend is
what builds it), install it with its declared dependencies into a fresh virtual environment, then
run the `object2vec` console script there: `--help` and a tiny `train`.

Cost: about 30 s on a 2-core machine. pip takes every pinned package from its cache or the machine's
configured wheel folders (torch==2.13.0 is a local file here), compiles no bytecode, and builds
sagemaker-training's C extension only when its wheel is not cached yet (about 4 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.jobs import make_job, records

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 900  # a cold cache on a slow machine: the install is the slow part
TRAIN_TIMEOUT_S = 300
# What a checkout holds that the build must not see: it would copy them, or they are build output.
NOT_SOURCES = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "wheels", "plots", "test_dir")

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would make the checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def run(command: list[str | Path], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-6000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout installed in it; returns its bin/."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source], work, PIP_TIMEOUT_S)
    (wheel,) = (work / "dist").glob("object2vec-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], work, 120)
    python = venv / "bin" / "python"
    run([*pip, "--python", python, "install", "--quiet", "--no-compile", wheel], work, PIP_TIMEOUT_S)
    return venv / "bin"


def test_wheel_declares_the_requirements_files(installed: Path) -> None:
    """The installed metadata lists requirements.txt's pins: the one place they are written."""
    script = "import importlib.metadata as m; print('\\n'.join(m.requires('object2vec')))"
    declared = run([installed / "python", "-c", script], installed, 60).stdout.split("\n")
    pins = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert pins and all(pin in declared for pin in pins), (pins, declared)
    assert any(line.startswith("pytest==") and 'extra == "dev"' in line for line in declared), declared


def test_console_script_prints_its_usage(installed: Path, tmp_path: Path) -> None:
    result = run([installed / "object2vec", "--help"], tmp_path, 60)
    assert result.stdout.startswith("usage: object2vec COMMAND [args...]\n")
    for command in ("train", "serve", "prepare"):
        assert f"\n  {command} " in result.stdout
    prepare = run([installed / "object2vec", "prepare", "--help"], tmp_path, 60)
    assert prepare.stdout.startswith("usage: object2vec prepare ")


def test_console_script_trains_from_the_installed_package(installed: Path, tmp_path: Path) -> None:
    base = make_job(tmp_path / "opt_ml", {"train": records(200, 0), "validation": records(60, 1)}, {"epochs": "1"})
    # The package and torch come from the venv (not the checkout, not another torch build).
    script = "import object2vec, importlib.metadata as m; print(object2vec.__file__, m.version('torch'))"
    module_file, torch_version = run([installed / "python", "-c", script], tmp_path, 60).stdout.split()
    assert Path(module_file).is_relative_to(installed.parent), module_file
    assert torch_version.startswith("2.13.0"), torch_version
    result = run([installed / "object2vec", "train"], tmp_path, TRAIN_TIMEOUT_S, SAGEMAKER_BASE_DIR=str(base))
    assert "#quality_metric: host=algo-1, epoch=0, validation accuracy <score>=" in result.stdout
    assert (base / "output" / "success").is_file() and (base / "model" / "model.safetensors").is_file()
    config = json.loads((base / "model" / "model_config.json").read_text())
    assert config["hyperparameters"]["epochs"] == 1
