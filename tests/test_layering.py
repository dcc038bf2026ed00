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
