"""The layering of docs/architecture.md, checked on the source: the method core imports no application room,
and no room imports the command line. Read from the import statements (``ast``), lazy imports included."""
from __future__ import annotations

import ast
from pathlib import Path

import crl_uiqa

PKG = Path(crl_uiqa.__file__).parent
ROOMS = ("video", "reporting", "serving", "demo")  # application code
TOP = ("commands", "cli", "__main__")  # the command line (and `python -m crl_uiqa`): over everything
CORE_PACKAGES = ("backbones", "baselines", "corruptions", "data")  # parts of the core that are packages
#: a core module's import of a room, allowed with the reason (keep this short)
ALLOWED = {
    ("crl_uiqa.training", "crl_uiqa.reporting.figures"):
        "training_curves.png beside history.csv in every run folder, drawn lazily and never fatal",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every crl_uiqa module ``path`` imports, absolute (``from .x import y`` -> ``crl_uiqa.x`` and
    ``crl_uiqa.x.y``, as y may be a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "crl_uiqa" or m.startswith("crl_uiqa.")}


def _area(module: str) -> str:
    """'core', 'room' or 'top' of a crl_uiqa module name."""
    first = module.split(".")[1] if "." in module else ""
    if first in TOP:
        return "top"
    if first in ROOMS:
        return "room"
    return "core"


def test_the_tree_has_the_documented_areas():
    for d in (*ROOMS, "commands", *CORE_PACKAGES):
        assert (PKG / d / "__init__.py").is_file(), d
    assert (PKG / "cli.py").is_file()


def test_core_imports_no_room_and_rooms_import_no_command_line():
    broken = []
    for path in sorted(PKG.rglob("*.py")):
        src = _module_name(path)
        for target in sorted(_imports(path)):
            allowed = any(src == a and (target == b or target.startswith(b + ".")) for a, b in ALLOWED)
            if _area(src) == "core" and _area(target) in ("room", "top") and not allowed:
                broken.append(f"{src} imports {target}")
            if _area(src) == "room" and _area(target) == "top":
                broken.append(f"{src} imports {target}")
    assert not broken, "layering of docs/architecture.md broken:\n" + "\n".join(broken)


def test_the_checker_sees_a_lazy_relative_import():
    """The check must see imports inside functions, relative ones included (what a lazy import looks like)."""
    f = PKG / "training.py"
    assert "crl_uiqa.reporting.figures" in _imports(f)
    assert _area("crl_uiqa.reporting.figures") == "room" and _area("crl_uiqa.io") == "core"
    assert _area("crl_uiqa.commands._common") == "top"
