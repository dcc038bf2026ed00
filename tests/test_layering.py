"""ray is imported only in the launch layer, so the core is usable and testable without a cluster."""
import ast
from pathlib import Path

PKG = Path(__file__).parent.parent / "recbase"


def test_only_the_launch_layer_imports_ray():
    offenders = []
    for path in PKG.rglob("*.py"):
        if "launch" in path.relative_to(PKG).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PKG)}: {n}" for n in names if n == "ray" or n.startswith("ray.")]
    assert not offenders, offenders


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _spells(text: str, names: set[str], dirs: set[str]) -> bool:
    """``text`` is a stage-output file name, a path ending in one, or a path through a stage's directory."""
    parts = [p for p in text.split("/") if p]
    return (text in names or any(text.endswith("/" + n) for n in names)
            or ("/" in text and any(p in dirs for p in parts[:-1] or parts)))


def test_no_stage_output_file_name_is_spelled_outside_the_artifacts_module():
    from recbase import artifacts

    names = artifacts.file_names()
    assert {"manifest.json", "recbase.json", "concept_ids.parquet", "items.parquet", "results.md"} <= names
    dirs = {"pretrain", "shards"}  # stage directories only ever reached through a handle
    root = PKG.parent
    offenders = []
    files = [*PKG.rglob("*.py"), *(root / "jobs").rglob("*.py"), *(root / "tune").rglob("*.py"),
             *(root / "benchmarks").rglob("*.py")]
    for path in files:
        rel = path.relative_to(root)
        # the artifacts module spells them; a source reader's input layout may share a name (RecBench's items.parquet)
        if rel.as_posix() in ("recbase/artifacts.py",) or rel.parts[:3] == ("recbase", "data", "sources"):
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if _spells(node.value, names, dirs):
                    offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_the_literal_check_catches_names_paths_and_fstring_parts():
    import ast as ast_

    names, dirs = {"manifest.json", "items.parquet"}, {"pretrain", "shards"}
    tree = ast_.parse('x = "manifest.json"\ny = f"{a}/items.parquet"\nz = "pretrain/histories.parquet"\nw = "model"')
    found = [n.value for n in ast_.walk(tree) if isinstance(n, ast_.Constant) and isinstance(n.value, str)
             and _spells(n.value, names, dirs)]
    assert sorted(found) == ["/items.parquet", "manifest.json", "pretrain/histories.parquet"]
