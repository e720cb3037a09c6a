"""Imports go one way: web -> services -> adaptors/upstream/models -> wire/errors/config."""
import ast
import pathlib

APP = pathlib.Path(__file__).resolve().parent.parent / "app"

# layer -> layers and libraries it must never import
FORBIDDEN = {
    "services": {"web", "schemas", "flask"},  # bodies and queries are parsed at the edge (web, CLI)
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


def layers_imported(path: pathlib.Path) -> set[str]:
    """`app.services.x` -> "services"; external `flask.json` -> "flask"."""
    package = ["app", *path.relative_to(APP).with_suffix("").parts][:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                if node.module:
                    names.add(".".join(base + [node.module]))
                else:
                    names.update(".".join(base + [alias.name]) for alias in node.names)
            else:
                names.add(node.module)
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
