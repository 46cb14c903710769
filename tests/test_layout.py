"""The layout stays what the README says: every module listed, no private names across modules,
no import from backends/ into train/ (the loop that once was), flows free of heavy imports at import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "avsync"


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"### Layout.*?```\n(.*?)```", text, re.S)
    assert m, "README has no Layout block"
    return m.group(1)


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_and_folder_is_in_the_readme_layout():
    block = _layout_block()
    listed_files = set(re.findall(r"^(avsync/[\w/]+\.py)", block, re.M))
    listed_dirs = set(re.findall(r"^(avsync/\w+/)", block, re.M))
    for p in _modules():
        rel = p.relative_to(ROOT).as_posix()
        if p.parent == PKG:
            assert rel in listed_files, f"{rel} is not in the README's layout"
        else:
            top = f"avsync/{p.relative_to(PKG).parts[0]}/"
            assert top in listed_dirs, f"{top} is not in the README's layout"
            if p.name != "__init__.py":
                # each file of a package folder is named in its line(s)
                assert p.stem in block, f"{rel} is not named in the README's layout"
    for rel in listed_files:
        assert (ROOT / rel).is_file(), f"the README lists {rel}, which does not exist"
    for rel in listed_dirs:
        assert (ROOT / rel).is_dir(), f"the README lists {rel}, which does not exist"


def _imports(p: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(p.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avsync"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names if a.name.startswith("avsync"))
    return out


def test_no_module_imports_another_modules_private_names():
    for p in _modules():
        own = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for module, names in _imports(p):
            if module == own:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{p.relative_to(ROOT)} imports private {private} from {module}"


def test_backends_do_not_import_train():
    for p in (PKG / "backends").glob("*.py"):
        for module, _ in _imports(p):
            assert not module.startswith("avsync.train"), f"{p.name} imports {module}"


def test_only_media_and_remux_open_media_for_the_flows():
    """The flows, features and backends read media through avsync.media (remux re-muxes)."""
    allowed = {"media.py", "remux.py"}
    generators = {"synthetic.py", "data.py"}  # test/bench media generators write their own files
    for p in _modules():
        if p.name in allowed or p.name in generators:
            continue
        assert "av.open(" not in p.read_text(), f"{p.relative_to(ROOT)} opens media itself"
