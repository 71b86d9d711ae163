#!/usr/bin/env python3
"""Checks the workspace's layout rules (docs/architecture.md, "Code map"):

1. folders say what they hold: services/ holds exactly the three services;
2. crate dependencies point down the layers (coord, proto  <-  crates/  <-  services/
   <-  tools/, testing/); a production crate never depends on tools/ or testing/;
   dev-dependencies may reach test-support crates in testing/ but never close a cycle
   (a crate's dev-dependency on itself, for its test-only features, is not one);
3. no import cycle between the modules of one crate;
4. no source file over LIMIT lines unless its module comment says why it is one thing
   (a `//!` line containing "one file");
5. no test support inside a library crate: no `pub mod testing` / `pub mod fuzzing`,
   no `test-harness` / `fuzzing` features.

Usage: scripts/check-layout.py [--graph]   (exit 1 and one line per finding if broken;
--graph prints the module graph of every crate, for reading).
"""
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 500
SERVICES = {"inventory", "order", "payment"}

# Layer of a crate by the folder it lives in; a normal dependency must point to a lower
# layer (or, for tools/testing, sideways within layer 3).
LAYERS = {"coord": 0, "proto": 0, "crates": 1, "services": 2, "tools": 3, "testing": 3}


def crates():
    """name -> (path, manifest) for every workspace member."""
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    found = {}
    for member in workspace["workspace"]["members"]:
        path = ROOT / member
        manifest = tomllib.loads((path / "Cargo.toml").read_text())
        found[manifest["package"]["name"]] = (path, manifest)
    return found


def layer(path):
    return LAYERS.get(path.relative_to(ROOT).parts[0])


def deps(manifest, table, members):
    return [name for name in manifest.get(table, {}) if name in members]


def check_folders(findings):
    held = {p.name for p in (ROOT / "services").iterdir() if p.is_dir()}
    if held != SERVICES:
        findings.append(f"services/ holds {sorted(held)}, not exactly {sorted(SERVICES)}")


def reaches(graph, start, goal):
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def check_crates(members, findings):
    normal = {name: deps(m, "dependencies", members) for name, (_, m) in members.items()}
    for name, (path, manifest) in members.items():
        here = path.relative_to(ROOT)
        for dep in normal[name]:
            there = members[dep][0]
            if layer(there) > layer(path) or (layer(there) == layer(path) < 3):
                findings.append(
                    f"crate {name} ({here}) depends on {dep} ({there.relative_to(ROOT)}): "
                    "dependencies point down the layers"
                )
        for dep in deps(manifest, "dev-dependencies", members):
            if dep == name:
                # A crate's own tests switching on its test-only features (inventory's
                # `test-hooks`): no other crate is involved, so no cycle is closed.
                continue
            there = members[dep][0]
            if layer(there) > layer(path) and there.relative_to(ROOT).parts[0] != "testing":
                findings.append(f"crate {name} dev-depends on {dep}, which is not test support")
            if reaches(normal, dep, name):
                findings.append(f"crate {name} dev-depends on {dep}, which depends on {name}")
        features = manifest.get("features", {})
        for bad in ("test-harness", "fuzzing"):
            if bad in features and layer(path) < 3:
                findings.append(f"crate {name} has feature `{bad}`: test support lives in testing/ or fuzz/")


USE = re.compile(r"\b(crate|super)((?:::\w+)+)")
GROUP = re.compile(r"\b(crate|super)((?:::\w+)*)::\{([^}]*)\}", re.S)
REEXPORT = re.compile(r"^\s*pub(?:\(crate\))?\s+use\s+(\w+)::(?:\{([^}]*)\}|(\w+))", re.M)


def module_files(src):
    """module path (tuple) -> file, for every module file under src/ (bins excluded)."""
    modules = {}
    for file in src.rglob("*.rs"):
        rel = file.relative_to(src)
        if rel.parts[0] == "bin" or rel.name == "main.rs":
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] in ("lib", "mod"):
            parts.pop()
        modules[tuple(parts)] = file
    return modules


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def resolve(modules, reexports, base, segments):
    """The module a path names: the longest module prefix, through re-exports."""
    path = list(base)
    for i in range(len(segments), 0, -1):
        candidate = tuple(path + segments[:i])
        if candidate in modules:
            target = candidate
            rest = segments[i:]
            break
    else:
        target, rest = tuple(path), segments
    if rest and (target, rest[0]) in reexports:
        return reexports[(target, rest[0])]
    return target


def module_graph(src):
    modules = module_files(src)
    reexports = {}
    for module, file in modules.items():
        for m in REEXPORT.finditer(strip_comments(file.read_text())):
            child = module + (m.group(1),)
            if child in modules:
                for name in (m.group(2) or m.group(3)).split(","):
                    name = name.strip().split(" as ")[-1].strip()
                    if name and name != "self":
                        reexports[(module, name)] = child
    graph = {m: set() for m in modules}
    for module, file in modules.items():
        text = strip_comments(file.read_text())
        # `#[cfg(test)] mod tests { ... }` uses its parent freely; cut it off.
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        is_dir_module = file.name in ("mod.rs", "lib.rs")
        parent = module if is_dir_module else module[:-1]
        refs = []
        for m in GROUP.finditer(text):
            for item in m.group(3).split(","):
                item = item.strip().split(" as ")[0].split("::")
                if item[0] and item[0] != "self":
                    refs.append((m.group(1), [s for s in m.group(2).split("::") if s] + item))
        for m in USE.finditer(text):
            refs.append((m.group(1), [s for s in m.group(2).split("::") if s]))
        for kind, segments in refs:
            base = () if kind == "crate" else parent
            while segments and segments[0] == "super":
                base, segments = base[:-1], segments[1:]
            target = resolve(modules, reexports, base, segments)
            if target != module and target in graph and not is_ancestor(module, target):
                graph[module].add(target)
    return graph


def is_ancestor(module, target):
    """A module using its own parent's private helpers is nesting, not a cycle."""
    return len(target) < len(module) and module[: len(target)] == target


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def name(module):
    return "::".join(module) or "crate"


def check_modules(members, findings, show):
    for crate, (path, _) in sorted(members.items()):
        src = path / "src"
        if not src.is_dir():
            continue
        graph = module_graph(src)
        if show:
            print(f"# {crate}")
            for module in sorted(graph):
                print(f"  {name(module)} -> {', '.join(sorted(map(name, graph[module])))}")
        for component in cycles(graph):
            findings.append(
                f"crate {crate}: import cycle between modules {', '.join(sorted(map(name, component)))}"
            )


def check_sizes(members, findings):
    for _, (path, _) in sorted(members.items()):
        for file in sorted((path / "src").rglob("*.rs")):
            lines = file.read_text().splitlines()
            if len(lines) <= LIMIT:
                continue
            header = " ".join(l for l in lines if l.startswith("//!")).lower()
            if "one file" not in header:
                findings.append(
                    f"{file.relative_to(ROOT)}: {len(lines)} lines, and its module comment "
                    "does not say why it is one file"
                )


def check_test_support(members, findings):
    for crate, (path, _) in sorted(members.items()):
        if layer(path) == 3:
            continue
        for file in (path / "src").rglob("*.rs"):
            for m in re.finditer(r"^\s*pub mod (testing|fuzzing)\b", file.read_text(), re.M):
                findings.append(f"{file.relative_to(ROOT)}: `pub mod {m.group(1)}` in a library crate")


def main():
    show = "--graph" in sys.argv[1:]
    members = crates()
    findings = []
    check_folders(findings)
    check_crates(members, findings)
    check_modules(members, findings, show)
    check_sizes(members, findings)
    check_test_support(members, findings)
    for finding in findings:
        print(f"check-layout: {finding}")
    if findings:
        sys.exit(1)
    print(f"check-layout: {len(members)} crates: folders, layers, module cycles, file sizes, test support ok")


if __name__ == "__main__":
    main()
