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
