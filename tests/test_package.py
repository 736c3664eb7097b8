"""The installed package: one console command that works from any folder, and measuring without the extras."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHADOWS = "raise ImportError('a user folder shadowed the installed package')\n"


def shadow_folder(root: Path) -> Path:
    """A working directory like many ML projects': folders and modules named like our packages."""
    (root / "models").mkdir(parents=True)  # an empty folder: the namespace package that broke `python -m eval`
    for name in ("eval", "align"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(SHADOWS)
    for name in ("data_gen", "models"):
        (root / f"{name}.py").write_text(SHADOWS)
    return root


def without_extras(root: Path) -> dict:
    """An environment in which neither wandb nor deepspeed can be imported (as on a `pip install .` without extras)."""
    blocker = root / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['wandb'] = None\nsys.modules['deepspeed'] = None\n")
    return {**os.environ, "PYTHONPATH": str(blocker)}


def test_console_command_runs_from_a_folder_that_shadows_every_package(tmp_path):
    exe = shutil.which("modality-align")
    assert exe, "the modality-align console script is not installed: run pip install -e '.[dev]'"
    work = shadow_folder(tmp_path / "work")
    env = without_extras(tmp_path)
    listing = subprocess.run([exe, "--help"], cwd=work, env=env, capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    for command in ("data", "measure", "report", "organism", "align"):
        assert f"  {command} " in listing.stdout
    for command in (["data", "colors", "--help"], ["organism", "build", "--help"], ["align", "--help"]):
        res = subprocess.run([exe, *command], cwd=work, env=env, capture_output=True, text=True)
        assert res.returncode == 0 and "(default:" in res.stdout, (command, res.stderr[-2000:])
    res = subprocess.run([exe, "measure", "--model", "organism", "--groups", "3", "--output_dir", "run"], cwd=work,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "balance point:" in res.stdout
    assert json.loads((work / "run" / "analysis.json").read_text())["counts"]["analysed"] > 0
    res = subprocess.run([exe, "nonsense"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "unknown command 'nonsense'" in res.stderr


def test_python_dash_m_align_is_the_console_command(tmp_path):
    res = subprocess.run([sys.executable, "-m", "align", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and "modality-align" in res.stdout and "  precision " in res.stdout


def test_the_wheel_installs_only_the_design_cards_packages():
    from setuptools import find_packages
    import tomllib
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    found = find_packages(str(root), include=config["tool"]["setuptools"]["packages"]["find"]["include"])
    assert {p.split(".")[0] for p in found} == {"align", "eval", "data_gen"}
    assert "eval.models" in found and "eval.models.families" in found
    assert not {"wandb", "deepspeed"} & {d.split(">")[0].split("=")[0] for d in config["project"]["dependencies"]}
