"""The layout holds: imports point down the stack, no module imports itself back, every entry point has --help."""
import ast
import dataclasses
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["data_gen", "eval.models", "eval", "align", "recipes"]  # each may import only those before it
PACKAGES = ["data_gen", "eval", "align", "recipes"]


def layer_of(module: str) -> str:
    """The layer a module belongs to: the model layer is eval.models, below the rest of eval."""
    return "eval.models" if module == "eval.models" or module.startswith("eval.models.") else module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Project modules `path` imports anywhere (top level or inside functions), relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def project_modules() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        # `from pkg import name` may name a module or an attribute: keep the edges to real modules
        graph[name] = {m for m in imports_of(path) if m in modules and m != name}
    return graph


def test_imports_point_down_the_stack():
    upward = [(a, b) for a, deps in project_modules().items() for b in deps
              if LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a))]
    assert not upward, f"imports against recipes -> align -> eval -> eval.models -> data_gen: {upward}"


def test_no_import_cycles():
    graph = project_modules()
    # a package's __init__ re-exporting its own modules is not a cycle of behaviour: drop package -> own child edges
    graph = {a: {b for b in deps if not b.startswith(a + ".")} for a, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_model_layer_imports_neither_eval_nor_align():
    deps = {layer_of(b) for a, bs in project_modules().items() if layer_of(a) == "eval.models" for b in bs}
    assert deps <= {"eval.models", "data_gen"}, deps


def run_entry_point(command: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`python *command` in this process (exit code, stdout, stderr): a subprocess per command spent ~9 s
    importing torch and transformers again; tests/test_recipe.py still runs one script as a subprocess."""
    module = command[1] if command[0] == "-m" else None
    args = command[2:] if module else command[1:]
    monkeypatch.setattr(sys, "argv", [module or command[0], *args])
    try:
        if module:
            # a package's __main__ imported earlier (another test) would be run again over itself: runpy warns
            monkeypatch.delitem(sys.modules, f"{module}.__main__", raising=False)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(ROOT / command[0]), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [
    ["-m", "data_gen", "colors", "--help"], ["-m", "eval", "measure", "--help"],
    ["-m", "align.organism", "build", "--help"],
])
def test_every_entry_point_has_help_with_defaults(command, monkeypatch, capsys):
    code, out, err = run_entry_point(command, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert "(default:" in out and "--output_dir" in out


@pytest.mark.parametrize("command, never_loaded", [
    (["recipes/align_llava.py"], {"peft", "accelerate", "datasets", "eval.api", "align.recipe", "transformers.processing_utils"}),
    (["recipes/precision_table.py"], {"peft", "datasets", "eval.api", "align.precision"}),
    (["-m", "align.organism", "build"], {"torch", "datasets"}),
])
def test_help_loads_nothing_it_does_not_print(command, never_loaded):
    """What keeps --help fast (python -m align.help_bench): the recipes import TrainingArguments without peft and
    nothing that measures or trains; the organism builder imports its configurations only. A fresh process, as
    on the command line (the recipes change how transformers loads only there)."""
    res = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(default:" in res.stdout and "--output_dir" in res.stdout
    loaded = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "data_gen.cli" in loaded and not loaded & never_loaded, loaded & never_loaded


@pytest.mark.parametrize("command", [["-m", "data_gen"], ["-m", "eval"], ["-m", "align.organism"]])
def test_commands_are_listed(command, monkeypatch, capsys):
    code, out, _ = run_entry_point([*command, "--help"], monkeypatch, capsys)
    assert code == 0 and "commands:" in out
    code, _, err = run_entry_point([*command, "nonsense"], monkeypatch, capsys)
    assert code == 2 and "unknown command 'nonsense'" in err


def test_same_flag_names_everywhere():
    """The same thing has the same name in every entry point (dashes and underscores both accepted)."""
    from align.arguments import AlignArguments
    from align.organism.__main__ import EvaluateArguments
    from align.organism.config import OrganismConfig
    from data_gen.__main__ import GenerateArguments
    from eval.__main__ import ScoreArguments
    fields = lambda cls: set(cls.__dataclass_fields__)
    for name in ("groups", "dataset_seed", "image_size"):
        assert name in fields(GenerateArguments) & fields(AlignArguments) & fields(OrganismConfig), name
    assert "output_dir" in fields(GenerateArguments) & fields(ScoreArguments) & fields(EvaluateArguments)
    assert "per_device_eval_batch_size" in fields(ScoreArguments) & fields(EvaluateArguments)
    banned = {"out", "size", "canvas", "data_groups", "data_size", "batch_size", "eval_batch_size", "data_seed"}
    for cls in (GenerateArguments, AlignArguments, OrganismConfig, ScoreArguments, EvaluateArguments):
        assert not fields(cls) & banned, (cls.__name__, fields(cls) & banned)


# ---- the registries: a family, a task and a method are each one registered module
REGISTRIES = {  # package -> (registry module, its dict, what one unit is)
    "eval.models.families": ("eval.models.registry", "FAMILIES"),
    "eval.tasks": ("eval.tasks", "TASKS"),
    "align.methods": ("align.methods", "METHODS"),
}


@pytest.mark.parametrize("package", list(REGISTRIES))
def test_every_registered_unit_lives_in_its_own_module_of_the_registry_package(package):
    import importlib
    module, name = REGISTRIES[package]
    registry = importlib.import_module(module)
    discover = getattr(registry, "_discover")
    discover()
    units = getattr(registry, name)
    assert len(units) >= 4, units
    homes = [cls.__module__ for cls in units.values()]
    assert all(h.startswith(package + ".") for h in homes), homes
    assert len(set(homes)) == len(homes), f"two units registered in one module: {homes}"


@pytest.mark.parametrize("package, forbidden", [
    ("eval.tasks", {"eval.api", "eval.__main__"}),  # tasks sit below the API and the commands that read them
    ("align.methods", {"align.recipe", "align.api", "align.commands", "align.cli", "align.precision"}),
    ("eval.models", {"eval.tasks", "eval.api"}),
])
def test_registry_packages_sit_below_what_reads_them(package, forbidden):
    graph = project_modules()
    bad = {(a, b) for a, deps in graph.items() if a == package or a.startswith(package + ".") for b in deps
           if b in forbidden}
    assert not bad, bad


def test_every_method_has_its_own_training_config():
    from transformers import TrainingArguments
    from align.methods import TrainingFree, get_method, supported_methods
    methods = [get_method(m) for m in supported_methods()]
    configs = [m.config_class for m in methods]
    # the trained ones extend TrainingArguments (or a TRL config); the training-free ones are their own dataclasses
    assert all(issubclass(m.config_class, TrainingArguments) != isinstance(m, TrainingFree) for m in methods)
    assert all(dataclasses.is_dataclass(c) for c in configs)
    assert len(set(configs)) == len(configs), "each method names its own config dataclass"
    assert {"soft", "hard", "dpo", "mixed", "blind_sft", "steer", "steer_uncertainty", "prompt"} <= set(supported_methods())


def test_every_task_implements_the_interface():
    from eval.tasks import Task, get_task, supported_tasks
    assert {"colors", "attributes", "jsonl", "recognition", "av"} <= set(supported_tasks())
    for name in supported_tasks():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name and task.help
        assert task.recipe_config is None or (ROOT / task.recipe_config).exists(), task.recipe_config
