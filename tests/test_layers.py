"""Each layer imports only from below it: the ring's binding from nothing above it but
the errors module, the modules built on it from the binding and codecs only."""

from __future__ import annotations

import re
from pathlib import Path

NATIVE = Path(__file__).resolve().parent.parent / "_native"
IMPORT = re.compile(r"^\s*(?:from\s+(\S+)\s+c?import|c?import\s+(\S+))", re.M)


def imported(pyx: str) -> set[str]:
    text = (NATIVE / pyx).read_text()
    return {a or b for a, b in IMPORT.findall(text) if (a or b).startswith("framebus")}


def test_the_binding_imports_nothing_above_it() -> None:
    assert imported("_ring.pyx") == {"framebus.errors"}


def test_modules_on_the_binding_import_only_below_them() -> None:
    assert imported("_walcodec.pyx") == {"framebus._ring", "framebus.errors"}
    assert imported("_port.pyx") == {"framebus._ring", "framebus._envelope", "framebus.errors"}


def _python_imports(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(f"{base}.{a.name}" if node.module else base + a.name for a in node.names)
    return names


def test_lower_layers_do_not_import_the_bridge_or_cluster() -> None:
    # the bus, ports, metrics, WAL and CLI core know nothing of NATS; the bridge and the
    # cluster interfaces build on them, never the other way round
    root = NATIVE.parent
    lower = [p for p in (root / "framebus").glob("*.py") if p.name != "cli.py"]
    lower += list((root / "wal").rglob("*.py"))
    above = re.compile(r"(^|\.)(bridge|cluster)(\.|$)|^nats(\.|$)")
    offenders = {
        f"{p.relative_to(root)}: {name}"
        for p in lower
        for name in _python_imports(p)
        if above.search(name.lstrip("."))
    }
    assert offenders == set()
