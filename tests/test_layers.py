"""The package's layers: what may import what, read from the source (every import statement,
also those inside functions, so a deferred import cannot hide a circle).

    commands (COMMANDS: pretrain, linear_eval, finetune, knn, ...) and cli: anything
    research/  -> evals, core, data, augment, models + base
    evals/     -> core, data, augment, models + base
    core/      -> data, augment, models + base
    data/      -> augment + base
    augment/   -> base          models/ -> base          cpu/ -> base
    base: errors, config, eval_config (the config modules name the choices the layers own)

Configuration stops at the commands: core/ never imports the config module, and no library
package reads a key with a fallback (`config.get(key, default)`), so each key has one default
(config.py / eval_config.py). The CPU backend (cpu/) is imported by the process set-up (cli)
and core/backend.py alone, and its kernels never live under models/.

A command (simclr_jax/X.py, `python -m simclr_jax.X`) parses flags and calls its library, which
is named X_lib in its layer (evals/knn_lib.py, research/sweep_lib.py, evals/transfer_lib/;
pretrain's is core/train.py): no module or package below simclr_jax/ shares a command's name.
"""

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simclr_jax"
COMMANDS = {"pretrain", "linear_eval", "finetune", "knn", "sweep", "visualize", "plot", "transfer",
            "downstream", "import_tf"}
BASE = {"errors", "config", "eval_config", "transfer_config"}
CONFIG_MODULES = {f"simclr_jax.{m}" for m in BASE - {"errors"}}
ALLOWED = {  # layer -> the layers it may import (besides itself and BASE)
    "models": set(),
    "cpu": set(),
    "augment": set(),
    "data": {"augment"},
    "core": {"data", "augment", "models"},
    "evals": {"core", "data", "augment", "models"},
    "research": {"evals", "core", "data", "augment", "models"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module of the project (simclr_jax.*, configs.*) that `path` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            # `from simclr_jax.core import train` imports the module simclr_jax.core.train
            out |= {f"{node.module}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in out if m in modules or m.split(".")[0] == "configs"}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    """'core', 'data', ... for subpackage modules; the module's own name at the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "package"


def test_the_graph_sees_the_package():
    assert len(GRAPH) > 40
    assert "simclr_jax.core.losses" in GRAPH["simclr_jax.core.train"]


def test_no_import_circles():
    """Depth-first search for a cycle among the package's modules."""
    done, stack = set(), []

    def visit(m: str) -> None:
        if m in stack:
            cycle = stack[stack.index(m):] + [m]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if m in done:
            return
        stack.append(m)
        for dep in sorted(GRAPH.get(m, ())):
            if dep.startswith("simclr_jax") and dep != m and not m.startswith(dep + "."):
                visit(dep)
        stack.pop()
        done.add(m)

    for module in sorted(GRAPH):
        visit(module)


LIBRARIES = ("core", "data", "augment", "models", "evals", "cpu")
# Who may import the CPU backend: the process set-up and the one place that picks a conv.
CPU_IMPORTERS = {"simclr_jax.cli", "simclr_jax.core.backend"}
# What only CPU kernels need: foreign functions, XLA custom calls and their partitioning.
KERNEL_IMPORTS = ("ctypes", "jax.ffi", "jax.experimental.custom_partitioning")


def config_fallbacks(path: Path) -> list[str]:
    """'line N: X.get(...)' for every `.get` on a config (a name ending in 'config', or `c`)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get" and isinstance(node.func.value, ast.Name)
                and (node.func.value.id.endswith("config") or node.func.value.id in ("c", "cfg"))):
            out.append(f"line {node.lineno}: {ast.unparse(node)}")
    return out


@pytest.mark.parametrize("package", LIBRARIES)
def test_no_config_fallbacks_in_library_packages(package):
    found = {str(p.relative_to(ROOT)): f for p in (PACKAGE / package).rglob("*.py")
             if (f := config_fallbacks(p))}
    assert not found, (f"{package}/ reads config keys with a fallback default (the default "
                       f"belongs in config.py / eval_config.py, filled at the command): {found}")


def test_core_does_not_import_the_config_module():
    found = {m: sorted(d for d in deps if d in CONFIG_MODULES)
             for m, deps in GRAPH.items() if layer(m) == "core"}
    assert not {m: d for m, d in found.items() if d}, found


def test_augment_takes_its_typed_sub_config_not_the_run_config():
    """augment/ sees recipes.Augmentation (a frozen dataclass of its keys), never a ConfigDict:
    the only config it may read is the one `Augmentation.from_config` picks fields from."""
    found = {}
    for p in (PACKAGE / "augment").rglob("*.py"):
        tree = ast.parse(p.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if any(n.startswith("ml_collections") for n in names):
            found[p.name] = sorted(n for n in names if n.startswith("ml_collections"))
    assert not found, f"augment/ imports the config library: {found}"


def test_only_the_set_up_and_the_conv_choice_import_the_cpu_backend():
    importers = {m for m, deps in GRAPH.items()
                 if layer(m) != "cpu" and any(layer(d) == "cpu" for d in deps)}
    assert importers <= CPU_IMPORTERS, importers - CPU_IMPORTERS


def test_no_cpu_kernel_under_models():
    files = [p for p in (PACKAGE / "models").rglob("*") if p.is_file()]
    not_python = [p.name for p in files if p.suffix not in (".py", ".pyc")]
    kernels = {}
    for p in (f for f in files if f.suffix == ".py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith(KERNEL_IMPORTS):
                    kernels.setdefault(p.name, []).append(name)
    assert not not_python and not kernels, (
        f"CPU kernels belong in simclr_jax/cpu/: {not_python} {kernels}")


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_layers_import_only_lower_layers(module):
    deps = GRAPH[module]
    assert not any(d.split(".")[0] == "configs" for d in deps), (
        f"{module} imports configs/: library code must not depend on the config files")
    own = layer(module)
    if own == "core":
        assert not CONFIG_MODULES & deps, (
            f"{module} imports a config module: configuration stops at the commands")
    if own not in ALLOWED:  # commands, cli and the base modules
        if module.split(".")[-1] in BASE:
            assert not [d for d in deps if d.split(".")[-1] in COMMANDS | {"cli"}], module
        return
    for dep in deps:
        dep_layer = layer(dep)
        if dep_layer == own or dep == "simclr_jax" or (dep_layer == "cpu"
                                                        and module in CPU_IMPORTERS):
            continue
        name = dep.split(".")[1] if "." in dep else dep
        assert dep_layer in ALLOWED[own] or (dep_layer == "package" and name in BASE), (
            f"{module} ({own}/) imports {dep}: {own}/ may import only "
            f"{sorted(ALLOWED[own]) or 'nothing else'} and {sorted(BASE)}")


def test_every_top_level_module_is_a_command_cli_or_a_base_module():
    """So COMMANDS, which the next test checks names against, lists every command."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == COMMANDS | BASE | {"cli"}, (
        f"new top-level modules {sorted(top - COMMANDS - BASE - {'cli'})}: add each to COMMANDS "
        f"or BASE; gone: {sorted(COMMANDS | BASE | {'cli'} - top)}")


def test_no_library_module_or_package_shares_a_command_name():
    """A command and a library of one name send a newcomer to the wrong file: the library of
    command X is X_lib (evals/knn_lib.py), and no module at any depth below the top level (a .py
    file or a package folder) shares a command's name."""
    clashes = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*")
                     if p.parent != PACKAGE and "__pycache__" not in p.parts
                     and ((p.is_file() and p.suffix == ".py" and p.stem in COMMANDS)
                          or (p.is_dir() and p.name in COMMANDS)))
    assert not clashes, (
        f"{clashes} share a command's name (simclr_jax/<name>.py): the library of command X is "
        f"X_lib in its layer (e.g. evals/knn_lib.py, evals/transfer_lib/), other modules get a "
        f"name saying what they hold (evals/weighted_knn.py)")


def test_importing_every_module_starts_no_xla_backend():
    """Commands import their libraries before jax.distributed.initialize, which must come
    before anything starts the XLA backend (a jnp array at import would)."""
    code = ("import importlib, pkgutil, simclr_jax\n"
            "mods = [m.name for m in pkgutil.walk_packages(simclr_jax.__path__, 'simclr_jax.')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "import jax._src.xla_bridge as xb\n"
            "print(len(mods), sorted(xb._backends))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    count, backends = result.stdout.split(" ", 1)
    assert int(count) == len(GRAPH) - 1 and backends.strip() == "[]", result.stdout


def test_downstream_is_the_pretrained_module_under_its_old_name():
    downstream = importlib.import_module("simclr_jax.downstream")
    pretrained = importlib.import_module("simclr_jax.evals.pretrained")
    assert downstream.load_encoder is pretrained.load_encoder
    assert downstream.Pretrained is pretrained.Pretrained
