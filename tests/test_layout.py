"""The layout's rules (docs/DESIGN.md, "Map"), checked over the source: the library imports none of the
apps, the apps do not import each other (infer <-> train), test modules import no other test module, no
import cycle between files, no package folder named `spec`. Every import counts, module-level or inside a
function."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sparrow_jax", "infer", "train", "convert")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub (pkg's __init__ runs first, as for any
            # import below pkg: not counted); `from pkg import name` imports pkg.
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): imports(p, known) - {module_name(p)} for p in files}


def top(module: str) -> str:
    return module.split(".")[0]


def forbidden(g) -> list:
    """Imports the layout forbids: the library importing an app, infer <-> train, train or convert importing
    another app (infer may call convert only through its command line, never import it)."""
    return [(m, d) for m, deps in g.items() for d in deps
            if (top(m) == "sparrow_jax" and top(d) != "sparrow_jax") or {top(m), top(d)} == {"infer", "train"}
            or (top(m) != "sparrow_jax" and top(d) not in (top(m), "sparrow_jax"))]


def cycles(g) -> list:
    state, found = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g[m]):
            if state.get(d) == "open":
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    return found


def test_library_imports_no_app_and_apps_do_not_import_each_other():
    assert forbidden(graph()) == []


def test_no_import_cycles_between_files():
    assert cycles(graph()) == []


def test_the_checks_find_a_planted_cycle_and_forbidden_import(tmp_path, monkeypatch):
    for pkg, text in [("sparrow_jax", "import infer.a\n"), ("infer", ""), ("train", ""), ("convert", "")]:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(text)
    (tmp_path / "infer" / "a.py").write_text("from infer import b\n")
    (tmp_path / "infer" / "b.py").write_text("def f():\n    from .a import x\n")  # lazy and relative
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    g = graph()
    assert g["infer.a"] == {"infer.b"} and g["infer.b"] == {"infer.a"}
    assert forbidden(g) == [("sparrow_jax", "infer.a")]
    assert cycles(g) == [["infer.a", "infer.b", "infer.a"]]


def test_test_modules_import_no_other_test_module():
    tests = ROOT / "tests"
    names = {p.stem for p in tests.glob("test_*.py")}
    bad = []
    for p in tests.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [(p.name, m) for m in mods if m.split(".")[-1] in names or m.startswith("tests.")]
    assert bad == []


def test_no_package_folder_is_named_spec():
    assert [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("spec") if p.is_dir()] == []
