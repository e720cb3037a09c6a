"""Imports go one way: web -> services -> adaptors/upstream/models -> wire/errors/config; and in
tests/ and bench/, support code is imported from tests/support, never from a test module."""
import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
APP = REPO / "app"

# layer -> layers and libraries it must never import
FORBIDDEN = {
    # services are handed what they use: only web, the CLI and the gunicorn hooks look in app/state.py
    "services": {"web", "schemas", "flask", "state"},  # bodies and queries are parsed at the edge (web, CLI)
    "models": {"web", "services", "flask"},
    "schemas": {"web", "services", "models", "db", "adaptors", "upstream", "flask"},
    # adaptors are pure translation: the request value and SSE framing come from wire, not upstream
    "adaptors": {"web", "services", "models", "db", "upstream", "flask", "requests", "peewee"},
    "upstream": {"web", "services", "models", "adaptors", "channel_types", "flask"},
    "channel_types": {"web", "services", "models", "db", "schemas", "flask"},  # the registry: adaptors + transports
    "wire": {"web", "services", "models", "db", "schemas", "adaptors", "upstream", "channel_types",
             "flask", "requests", "peewee"},  # neutral ground: imports no layer
    "periods": {"web", "services", "models", "db", "schemas", "flask"},  # calendar arithmetic only
    "config": {"web", "services", "models", "db", "schemas", "errors", "flask"},
}


def modules_imported(source: str, package: list[str], *, with_names: bool = False) -> set[str]:
    """Dotted names of the modules `source` imports (relative imports resolved against `package`);
    with_names, also `module.name` for each `from module import name` (a name may be a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                if node.module:
                    module = ".".join(base + [node.module])
                    names.add(module)
                    if with_names:
                        names.update(f"{module}.{alias.name}" for alias in node.names)
                else:
                    names.update(".".join(base + [alias.name]) for alias in node.names)
            else:
                names.add(node.module)
                if with_names:
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layers_imported(path: pathlib.Path) -> set[str]:
    """`app.services.x` -> "services"; external `flask.json` -> "flask"."""
    package = ["app", *path.relative_to(APP).with_suffix("").parts][:-1]
    names = modules_imported(path.read_text(), package)
    return {n.split(".")[1] if n.startswith("app.") else n.split(".")[0] for n in names}


def modules_of(layer: str):
    if (APP / f"{layer}.py").exists():
        return [APP / f"{layer}.py"]
    return sorted((APP / layer).rglob("*.py"))


def test_layers():
    problems = []
    for layer, forbidden in FORBIDDEN.items():
        for path in modules_of(layer):
            bad = layers_imported(path) & forbidden
            if bad:
                problems.append(f"{path.relative_to(APP)} imports {sorted(bad)}")
    assert not problems, problems


def test_the_checker_sees_relative_imports():
    assert {"models", "errors", "timefmt"} <= layers_imported(APP / "services" / "keys.py")
    assert {"services", "flask"} <= layers_imported(APP / "web" / "admin.py")



def imported_test_modules(source: str, path: pathlib.Path) -> set[str]:
    """The test modules (tests.test_x, tests.pkg.test_y) and conftests that `source`, the text of
    the file at `path` in the repository, imports."""
    package = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    return {name for name in modules_imported(source, package, with_names=True)
            if name.split(".")[0] == "tests"
            and any(part.startswith("test_") or part == "conftest" for part in name.split(".")[1:])}


def test_no_test_module_imports_another_and_bench_imports_only_support():
    """Shared code lives in tests/support: a test module imports no other test module nor a
    conftest (pytest hands out fixtures), and neither does the support code or bench/."""
    problems = []
    for path in sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]):
        bad = imported_test_modules(path.read_text(), path)
        if bad:
            problems.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not problems, problems


def test_the_test_import_checker_sees_every_spelling():
    probe = REPO / "tests" / "hostile" / "test_probe.py"  # never written: only its place counts
    cases = {
        # written in two pieces so that a plain grep for such imports does not find this file
        "from tests." "test_processes import procs": {"tests.test_processes", "tests.test_processes.procs"},
        "import tests.conftest": {"tests.conftest"},
        "from .conftest import X": {"tests.hostile.conftest", "tests.hostile.conftest.X"},
        "from ..test_faults import query": {"tests.test_faults", "tests.test_faults.query"},
        "from tests import test_limits": {"tests.test_limits"},
        "from tests.support.processes import procs": set(),
        "from tests.hostile.strategies import bodies": set(),
    }
    for source, expected in cases.items():
        assert imported_test_modules(source, probe) == expected, source
