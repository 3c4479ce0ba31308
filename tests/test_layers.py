"""The layer map of docs/design.md, enforced on the source: every import of every ``.py`` file of
a layer (also those inside functions, relative ones and ``importlib.import_module("...")``) is
checked against what that layer may not import. ``test_vector_env.py`` checks the same direction
at run time (making and stepping an env loads no agent code)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The scripts import each other as top-level modules (``import train_agent``): such a name is the
#: ``scripts`` layer too.
SCRIPT_MODULES = frozenset(p.stem for p in (ROOT / "scripts").glob("*.py"))

#: Layer (a folder of the repository) -> the top-level names its code must not import.
#: core ``rarl_gym/`` <- ``envs/`` <- ``agents/`` <- ``scripts/``, ``benchmarks/`` (docs/design.md, "Layers").
FORBIDDEN: dict[str, frozenset[str]] = {
    "rarl_gym": frozenset({"envs", "agents", "scripts", "benchmarks", "tests", "stable_baselines3", "sb3_contrib"}),
    "envs": frozenset({"agents", "scripts", "benchmarks", "tests", "stable_baselines3", "sb3_contrib"}),
    "agents": frozenset({"scripts", "benchmarks", "tests"}),
    "scripts": frozenset({"benchmarks", "tests"}),
}

#: The top of a layer: a package of it that the rest of the layer must not import (it may import
#: the rest). ``agents/cli`` (the ``rarl-gym`` command) sits above every other part of ``agents/``.
TOPS: dict[str, str] = {"agents": "agents.cli"}


def module_name(path: Path) -> str:
    """``agents/sb3/train.py`` -> ``agents.sb3.train``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``source`` (the code of ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def layer_of(imported: str) -> str:
    """The top-level name an import belongs to (a script module's is ``scripts``)."""
    top = imported.split(".")[0]
    return "scripts" if top in SCRIPT_MODULES else top


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def forbidden(layer: str, module: str, imported: str) -> bool:
    """Whether ``module`` (of ``layer``) may not import ``imported``: a layer above it, or the top
    of its own layer (:data:`TOPS`) from outside that top."""
    top = TOPS.get(layer)
    if top is not None and _within(imported, top) and not _within(module, top):
        return True
    return layer_of(imported) in FORBIDDEN[layer]


def violations(layer: str) -> list[str]:
    """``"file:line imports name"`` for every import of ``layer`` that the map forbids."""
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        if ".venv" in path.parts or "__pycache__" in path.parts:
            continue
        module = module_name(path)
        for line, name in imports(path.read_text(), module, path.name == "__init__.py"):
            if forbidden(layer, module, name):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_one_way(layer):
    assert (ROOT / layer).is_dir() and list((ROOT / layer).rglob("*.py"))
    bad = violations(layer)
    tops = f" (nor {TOPS[layer]} outside it)" if layer in TOPS else ""
    assert not bad, (
        f"{layer}/ may not import {', '.join(sorted(FORBIDDEN[layer]))}{tops} (docs/design.md, 'Layers'):\n" + "\n".join(bad)
    )


def test_the_command_is_the_top_of_agents():
    """agents/cli may import every other part of agents/; nothing else in agents/ may import it."""
    assert forbidden("agents", "agents.predict", "agents.cli")
    assert forbidden("agents", "agents.rarl.trainer", "agents.cli.train")
    assert not forbidden("agents", "agents.cli.train", "agents.rarl.trainer")
    assert not forbidden("agents", "agents.cli", "agents.cli.predict")
    assert not forbidden("agents", "agents.predict", "agents.client")  # a name that only starts alike
    assert forbidden("agents", "agents.cli.train", "benchmarks.x") and forbidden("agents", "agents.cli", "train_agent")
    assert (ROOT / "agents" / "cli" / "__init__.py").is_file()


def test_the_checker_sees_every_kind_of_import():
    """Imports inside functions, relative ones, ``from x import y`` and ``import_module`` count too."""
    source = (
        "import os\n"
        "from rarl_gym.glimpse import crop\n"
        "def f():\n"
        "    import stable_baselines3.common\n"
        "    from . import sibling\n"
        "    from ..core import thing\n"
        "    import importlib\n"
        "    return importlib.import_module('agents.rarl')\n"
        "import train_agent\n"
    )
    got = imports(source, "envs.sub.mod")
    assert sorted(name for _, name in got) == sorted(
        [
            "os",
            "rarl_gym.glimpse",
            "stable_baselines3.common",
            "envs.sub",
            "envs.core",
            "importlib",
            "agents.rarl",
            "train_agent",
        ]
    )
    assert (4, "stable_baselines3.common") in got and (8, "agents.rarl") in got
    assert {layer_of(name) for _, name in got} >= {"stable_baselines3", "agents", "scripts", "envs", "rarl_gym"}
    assert imports("from . import x\n", "envs", is_package=True) == [(1, "envs")]
    assert module_name(ROOT / "agents" / "sb3" / "__init__.py") == "agents.sb3"
    assert module_name(ROOT / "agents" / "sb3" / "train.py") == "agents.sb3.train"
