"""Functions one can hold in one's head: no function or method of the product is
longer than ``LIMIT`` lines, measured with ``ast`` from its ``def`` line to its last
line (decorators not counted; docstring and comments counted)."""

from __future__ import annotations

import ast
from pathlib import Path

import penetrator

LIMIT = 80
PRODUCT = Path(penetrator.__file__).resolve().parent


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    """``path:line name (N lines)`` of every function longer than ``limit``."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_of_the_product_is_over_the_limit() -> None:
    assert PRODUCT.name == "penetrator"
    assert (PRODUCT / "plan").is_dir()
    too_long = long_functions(PRODUCT)
    assert not too_long, f"functions over {LIMIT} lines (split them): " + "; ".join(too_long)


def test_the_measure_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"@staticmethod\ndef big():\n{body}\n")
    assert long_functions(tmp_path / "pkg") == [f"pkg/m.py:2 big ({LIMIT + 1} lines)"]
    (tmp_path / "pkg" / "m.py").write_text(f"def fits():\n{body[: body.rindex(chr(10))]}\n")
    assert long_functions(tmp_path / "pkg") == []
