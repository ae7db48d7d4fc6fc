"""The package installs as the README says, and its two dependency lists say the same thing."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements: list[str]) -> list[str]:
    return sorted(re.split(r"[<>=\[ ;]", r.strip(), maxsplit=1)[0].lower() for r in requirements if r.strip())


def test_requirements_txt_lists_the_same_runtime_dependencies_as_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert sorted(lines) == sorted(pyproject), "requirements.txt and pyproject.toml disagree"
    assert "pytest" not in _names(lines), "test tools belong in the dev extra, not the runtime requirements"


def test_the_salun_command_is_the_cli():
    out = subprocess.run([sys.executable, "-c", "from importlib.metadata import entry_points;"
                          "print([e.value for e in entry_points(group='console_scripts') if e.name == 'salun'])"],
                         capture_output=True, text=True, check=True).stdout
    assert "core.cli:main" in out


def test_importing_core_loads_no_heavy_library():
    code = ("import sys, core, core.classification, core.diffusion, core.concept, core.errors;"
            "heavy = [m for m in ('torch', 'streamlit', 'mlflow', 'diffusers') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def _module_level_imports(path: Path, name: str) -> set[str]:
    """Modules of core/ that `name` imports when it is imported (imports inside functions are lazy)."""
    import ast

    edges = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                edges.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() else node.module)
    return {e for e in edges if e == "core" or e.startswith("core.")}


def test_core_has_no_import_cycles():
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "core").rglob("*.py")}
    graph = {name: _module_level_imports(path, name) & files.keys() for name, path in files.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # a package importing its own submodule (core.cli -> core.cli.commands -> core.cli.classify) is not a
    # cycle unless the submodule imports back something that needs the package initialised first
    real = [c for c in cycles if not all(c[0].startswith(m) or m.startswith(c[0]) for m in c)]
    assert not real, f"import cycles in core/: {real}"


def test_no_name_is_used_that_is_not_defined():
    """A function lost in a merge (the per-layer chart once called one that no longer existed) fails
    only when that page draws it; pyflakes finds every such name in the code without running it."""
    from pyflakes import api, messages, reporter

    class Collect(reporter.Reporter):
        def __init__(self):
            super().__init__(None, None)
            self.found = []

        def flake(self, message):
            if isinstance(message, (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)):
                self.found.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: {msg}")

        def unexpectedError(self, filename, msg):
            self.found.append(f"{filename}: {msg}")

    collect = Collect()
    api.checkRecursive([str(ROOT / d) for d in ("core", "pages", "app.py", "bench", "examples")], collect)
    assert collect.found == []
