"""Runs that survive: bad and damaged inputs are refused before any work (one line, exit code 2, nothing written),
files are replaced whole or not at all, an output folder holds one run, a dataset loads without writing into its
folder, and released files are readable by everyone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_gen.files import FolderLock, atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]
RECIPE = [sys.executable, "recipes/align_llava.py", "--groups", "12", "--report_to", "wandb", "--dtype", "float32"]
MEASURE = [sys.executable, "-m", "eval", "measure", "--groups", "12"]


@pytest.fixture(scope="module")
def saved_data(tmp_path_factory):
    from data_gen import generate
    path = tmp_path_factory.mktemp("robust") / "data"
    generate("colors", 12, 0, 32).save(path)
    return path


def refused(command: list[str], tmp_path: Path, *names: str) -> str:
    """Run `command` with W&B writing under tmp_path; it must exit 2 with one line on stderr that names each of
    `names`, and write nothing: no output folder, no W&B run. Returns the line."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb-dir")}
    (tmp_path / "wandb-dir").mkdir(exist_ok=True)
    res = subprocess.run(command + ["--output_dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("error: ") and all(name in lines[0] for name in names), lines[0]
    assert not (tmp_path / "out").exists() and not any((tmp_path / "wandb-dir").iterdir())
    return lines[0]


def damaged_copy(data: Path, tmp_path: Path, file: str, keep: float = 0.5) -> Path:
    """A copy of the dataset with `file` cut to `keep` of its bytes."""
    import shutil
    copy = tmp_path / "damaged"
    shutil.copytree(data, copy)
    target = copy / file
    target.write_bytes(target.read_bytes()[:int(target.stat().st_size * keep)])
    return copy


@pytest.mark.parametrize("flag, value, named", [
    ("--per_device_eval_batch_size", "0", "per_device_eval_batch_size"),
    ("--per_device_train_batch_size", "0", "per_device_train_batch_size"),
    ("--tau", "-1", "tau"),
    ("--model_name_or_path", "nobody-here/no-such-model", "nobody-here/no-such-model"),
    ("--model_name_or_path", "./no/such/folder", "no/such/folder"),
])
def test_recipe_refuses_bad_input_before_any_work(flag, value, named, tmp_path):
    refused(RECIPE + [flag, value], tmp_path, named)


@pytest.mark.parametrize("launch, named", [("recipes/accelerate_configs/zero2-cpu.yaml", "tau"),
                                           ("no-such-config.yaml", "no-such-config.yaml")])
def test_a_launched_recipe_checks_its_inputs_before_any_process_starts(launch, named, tmp_path):
    refused(RECIPE + ["--launch", launch, "--tau", "-1" if named == "tau" else "0.25"], tmp_path, named)


def test_recipe_and_measure_name_a_damaged_dataset_file(saved_data, tmp_path):
    arrow = next((saved_data / "samples").glob("*.arrow")).relative_to(saved_data)
    damaged = damaged_copy(saved_data, tmp_path, str(arrow))
    refused(RECIPE + ["--data", str(damaged)], tmp_path, str(damaged / arrow))
    refused(MEASURE + ["--data", str(damaged)], tmp_path, str(damaged / arrow))


def test_a_truncated_parquet_export_is_caught_by_the_checksums(saved_data, tmp_path):
    from data_gen import ConflictData
    damaged = damaged_copy(saved_data, tmp_path, "parquet/samples.parquet")
    refused(MEASURE + ["--data", str(damaged)], tmp_path, str(damaged / "parquet" / "samples.parquet"))
    # a dataset saved before checksums: the Parquet fingerprint is checked
    info = json.loads((damaged / "info.json").read_text())
    info.pop("checksums")
    (damaged / "info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="fingerprint"):
        ConflictData.load(damaged)


def test_a_dataset_loaded_twice_is_hashed_once_and_still_checked_after_a_change(saved_data, tmp_path, monkeypatch):
    """The input checks and the run load the same dataset: its files are hashed the first time only, and a file
    changed between the two loads is still named."""
    import shutil
    from data_gen import ConflictData, store
    copy = tmp_path / "data"
    shutil.copytree(saved_data, copy)
    hashed = []
    real = store.verify_files
    monkeypatch.setattr(store, "verify_files", lambda *a: hashed.append(a[0]) or real(*a))
    ConflictData.load(copy)
    ConflictData.load(copy)
    assert hashed == [copy]
    part = copy / "parquet" / "samples.parquet"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(ValueError, match="samples.parquet"):
        ConflictData.load(copy)


@pytest.mark.parametrize("case", ["bad model", "hub id", "batch size", "damaged adapter", "adapter without config"])
def test_measure_refuses_bad_input_before_generating_data(case, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    args, named = {
        "bad model": (["--model", "./no-model-here"], "no-model-here"),
        "hub id": (["--model", "nobody-here/no-such-model"], "nobody-here/no-such-model"),
        "batch size": (["--per_device_eval_batch_size", "0"], "per_device_eval_batch_size"),
        "damaged adapter": (["--adapter", str(adapter)], str(adapter / "adapter_model.safetensors")),
        "adapter without config": (["--adapter", str(tmp_path)], "adapter_config.json"),
    }[case]
    refused(MEASURE + args, tmp_path, named)


def test_a_truncated_run_json_is_named_with_its_fix(saved_data, tmp_path):
    from eval import measure
    out = tmp_path / "out"
    measure("organism", data=saved_data, split="test", output_dir=out, batch_size=64, dtype="float32", lens=False)
    text = (out / "run.json").read_text()
    (out / "run.json").write_text(text[:len(text) // 2])
    res = subprocess.run(MEASURE + ["--data", str(saved_data), "--output_dir", str(out), "--no_lens"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert f"{out / 'run.json'} is damaged" in lines[0] and "delete" in lines[0]


def test_loading_a_dataset_writes_nothing_into_its_folder(saved_data):
    from data_gen import ConflictData
    before = sorted(p for p in saved_data.rglob("*"))
    data = ConflictData.load(saved_data)
    data.split("test").conflicts()
    data.split(["train", "validation"]).samples.map(lambda r: {"question": r["question"].upper()})
    assert sorted(p for p in saved_data.rglob("*")) == before


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = write_json(tmp_path / "analysis.json", {"n": 1})

    class Unwritable:
        def __float__(self):
            raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"n": Unwritable()})
    assert json.loads(path.read_text()) == {"n": 1} and sorted(tmp_path.iterdir()) == [path]
    # a write that dies half-way through the bytes (a full disk)
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real(self, text[:len(text) // 2])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError):
        write_json(path, {"n": 2, "more": list(range(100))})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"n": 1} and sorted(tmp_path.iterdir()) == [path]
    folder = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "file").write_text("x")
            raise RuntimeError("killed")
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(saved_data, tmp_path):
    out = tmp_path / "out"
    with FolderLock(out):
        with FolderLock(out):  # the holder itself may take it again (a command inside a command)
            pass
        env = {**os.environ, "WANDB_MODE": "disabled"}
        res = subprocess.run(MEASURE + ["--data", str(saved_data), "--output_dir", str(out)], capture_output=True,
                             text=True, cwd=ROOT, env=env, timeout=300)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
        assert f"pid {os.getpid()}" in lines[0] and "in use" in lines[0]
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    with FolderLock(out):  # released when the holder ends
        pass


@pytest.mark.parametrize("user_threads", [None, "1"])
def test_a_launched_cpu_process_keeps_the_users_thread_count(user_threads, tmp_path):
    """accelerate gives a one-process CPU launch OMP_NUM_THREADS of the physical cores (1 here); the run takes every
    core it may use, unless the user set the count before launching."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if user_threads:
        env["OMP_NUM_THREADS"] = user_threads
    script = tmp_path / "threads.py"
    script.write_text("import torch\nfrom eval.processes import processes\nprocesses()\nprint('threads', torch.get_num_threads())\n")
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
                          str(script)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    threads = int(res.stdout.split("threads")[-1])
    assert threads == (int(user_threads) if user_threads else len(os.sched_getaffinity(0)))


def test_released_files_are_readable_by_everyone(tmp_path):
    from safetensors.torch import save_file
    import torch
    from data_gen.files import make_readable
    save_file({"w": torch.zeros(2)}, str(tmp_path / "adapter_model.safetensors"))
    make_readable(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").stat().st_mode & 0o044 == 0o044


def test_a_scoring_folder_resumes_only_its_own_run(tmp_path):
    """Finished shards are kept only for the same model, data and settings; another run there is refused with the
    first difference, and a damaged run.json names what to delete."""
    from eval.sharded import check_same_run
    check_same_run(tmp_path, {"model": "a"})  # nothing there yet
    (tmp_path / "run.json").write_text(json.dumps({"model": "a", "dataset_fingerprint": "f1", "note": "x"}))
    check_same_run(tmp_path, {"model": "a", "dataset_fingerprint": "f1", "note": "y"}, ("model", "dataset_fingerprint"))
    with pytest.raises(ValueError, match="different dataset_fingerprint .'f1' vs 'f2'.*delete"):
        check_same_run(tmp_path, {"model": "a", "dataset_fingerprint": "f2"})
    (tmp_path / "run.json").write_text('{"model": "a", "datas')
    with pytest.raises(ValueError, match="delete"):
        check_same_run(tmp_path, {"model": "a"})
