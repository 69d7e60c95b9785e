"""The architecture, enforced: the folder tree is the layering, and imports only go down.

errors/invocation/statusschema < inventory < host < plan, checks, cloud < ops < present, taskrun < tasks, usage
< cli. A module may import its own package and the layers below; the operations (OPERATIONS) never
import each other, but for rollback, which is start-all with the images given; no import cycle
anywhere (function-level imports included); the inventory's model is a leaf."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "comfyume_fab"
RANK = {"errors": 0, "invocation": 0, "statusschema": 0, "inventory": 1, "host": 2, "plan": 3, "checks": 3, "cloud": 3,
        "ops": 4, "present": 5, "taskrun": 5, "tasks": 6, "usage": 6, "cli": 7}
OPERATIONS = {"comfyume_fab.ops.start", "comfyume_fab.ops.stop", "comfyume_fab.ops.status",
              "comfyume_fab.ops.rollback", "comfyume_fab.ops.copyimage", "comfyume_fab.ops.switch",
              "comfyume_fab.ops.warm"}
# Helpers of the operations (not operations: any operation may import them; they import none)
HELPERS = {"comfyume_fab.ops.health", "comfyume_fab.ops.audit", "comfyume_fab.ops.imagestep",
           "comfyume_fab.ops.transfer", "comfyume_fab.ops.serverless", "comfyume_fab.ops.autostop",
           "comfyume_fab.ops.provision", "comfyume_fab.ops.bill"}
# rollback IS start-all with the images of an earlier deploy given: the one operation built on another
BUILT_ON = {"comfyume_fab.ops.rollback": {"comfyume_fab.ops.start"},
            # switch-gpu redeploys the queue manager alone with start-all's deploy stage
            "comfyume_fab.ops.switch": {"comfyume_fab.ops.start"}}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[1:2] == ["lab"]:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The comfyume_fab modules `name` imports at run time (a package's `from . import x` counts x)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("comfyume_fab"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("comfyume_fab"))
    return {m for m in found if m != name and m in known and not m.startswith("comfyume_fab.lab")}


MODULES = modules()
GRAPH = {name: imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_sits_in_a_known_layer():
    assert {layer(m) for m in MODULES if layer(m)} <= set(RANK)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer(m)))
def test_imports_only_go_down(name):
    mine = layer(name)
    for target in GRAPH[name]:
        theirs = layer(target)
        if theirs is None or theirs == mine:
            continue
        assert RANK[theirs] < RANK[mine], f"{name} imports {target}: {theirs} is not below {mine}"


def test_an_operation_never_imports_another():
    for op in OPERATIONS:
        others = GRAPH[op] & (OPERATIONS - {op}) - BUILT_ON.get(op, set())
        assert not others, f"{op} imports {others}"


def test_a_helper_of_the_operations_imports_no_operation():
    for helper in HELPERS & set(GRAPH):
        assert not GRAPH[helper] & OPERATIONS, f"{helper} imports {GRAPH[helper] & OPERATIONS}"
    assert "comfyume_fab.ops.autostop" in GRAPH  # start-all and stop-verda --delete use it


def test_the_inventory_model_is_a_leaf():
    assert GRAPH["comfyume_fab.inventory.model"] <= {"comfyume_fab.errors", "comfyume_fab.inventory.secrets",
                                                      "comfyume_fab.inventory.yamlsrc"}


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            # a package importing its own submodules (re-exports) is not a cycle through the package
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                if not any(b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2
    for name in sorted(GRAPH):
        if not state.get(name):
            visit(name)


def test_only_the_ssh_edge_opens_ssh():
    for name, path in MODULES.items():
        source = path.read_text()
        if name != "comfyume_fab.host.ssh" and not name.startswith("comfyume_fab.host.ssh."):
            assert "import paramiko" not in source and "from fabric" not in source, name


def test_facts_and_actions_are_pure_and_reads_never_import_writes():
    """host.facts (reads) and host.actions (writes) build command lines and parse output: they
    never reach the SSH edge, a session or the state read; a fact never imports an action."""
    edge = ("comfyume_fab.host.ssh", "comfyume_fab.host.session", "comfyume_fab.host.state")
    for name in MODULES:
        if name.startswith(("comfyume_fab.host.facts", "comfyume_fab.host.actions")):
            bad = {m for m in GRAPH[name] if m.startswith(edge)}
            assert not bad, f"{name} imports {bad}"
        if name.startswith("comfyume_fab.host.facts"):
            assert not {m for m in GRAPH[name] if m.startswith("comfyume_fab.host.actions")}, name
