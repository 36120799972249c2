"""The shape of the code: imports point down the layers, the torch-free commands load no torch, and no
module grows into several.

Layers, top to bottom: ``harness`` (the CLI and the jobs) -> ``search``, ``targets``, ``results`` (side by
side, none importing another) -> ``core`` (imports nothing of ours). Every import counts, deferred ones
inside functions included: a deferred import hides a cycle from Python, not from a reader.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "harness", "search", "targets", "results")
# package -> the packages of ours it may import (itself included)
ALLOWED = {
    "core": {"core"},
    "search": {"core", "search"},
    "targets": {"core", "targets"},
    "results": {"core", "results"},
    "harness": set(PACKAGES),
}
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package of ours, line) of every import in the module, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update((name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in PACKAGES)
    return found


def test_every_package_is_walked():
    walked = {path.relative_to(ROOT).parts[0] for path in modules()}
    assert walked == set(PACKAGES)


def test_imports_point_down_the_layers():
    upward = []
    for path in modules():
        package = path.relative_to(ROOT).parts[0]
        upward += [f"{path.relative_to(ROOT)}:{line} imports {imported}"
                   for imported, line in sorted(imported_packages(path)) if imported not in ALLOWED[package]]
    assert upward == []


def test_the_walk_sees_deferred_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from harness.cli import main\n    import targets.vela\n")
    assert imported_packages(module) == {("harness", 2), ("targets", 3)}


def test_no_module_is_several_modules():
    long = [f"{path.relative_to(ROOT)}: {n} lines" for path in modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert long == []


TORCH_PROBE = """
import json, sys
from harness.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _probe(*arguments) -> dict:
    done = subprocess.run([sys.executable, "-c", TORCH_PROBE, *map(str, arguments)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arguments", [["report", "--help"], ["regress", "--help"], ["doctor"],
                                       ["tables", "--only", "table4", "--out", "{tmp}"], ["store", "--help"]])
def test_commands_that_train_nothing_load_no_torch(arguments, tmp_path):
    assert _probe(*(argument.format(tmp=tmp_path) for argument in arguments))["torch"] is False


def test_measuring_a_tflite_on_vela_loads_no_torch(hand_tflite_file, tmp_path):
    result = _probe("measure", "--tflite", hand_tflite_file, "--target", "vela", "--dataset", "synthetic",
                    "--out", tmp_path, "--quiet")
    assert result == {"code": 0, "torch": False}
