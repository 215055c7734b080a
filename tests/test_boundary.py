"""ipadapter_core must not import the host; the root __init__ must import nothing at module level."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST_MODULES = ("comfy", "comfy_api", "folder_paths", "nodes", "server", "execution", "comfy_extras")

BLOCKER = f"""
import importlib.abc, pathlib, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HOST_MODULES!r}:
            raise ImportError("host module " + name + " imported by ipadapter_core")
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT)!r})
import ipadapter_core
for info in pkgutil.iter_modules(ipadapter_core.__path__):
    __import__("ipadapter_core." + info.name)
print("ok", sorted(m for m in sys.modules if m.startswith("ipadapter_core.")))
"""


def test_core_imports_without_host():
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert "ipadapter_core.formats" in result.stdout and "ipadapter_core.adapter" in result.stdout


def test_blocker_catches_a_host_import(tmp_path):
    pkg = tmp_path / "ipadapter_core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import folder_paths\n")
    script = BLOCKER.replace(repr(str(ROOT)), repr(str(tmp_path)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert result.returncode != 0 and "host module folder_paths" in result.stderr


def test_root_init_has_no_module_level_imports():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    top = [type(node).__name__ for node in tree.body if not isinstance(node, (ast.Expr, ast.AsyncFunctionDef))]
    assert top == [], f"module-level statements in __init__.py: {top}"
