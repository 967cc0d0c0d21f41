#!/usr/bin/python3
"""check_names.py: every behaviour has the same <concept>_<behaviour> name in every layer.

Collects the test names of the three suites -- C TEST(name) in tests/c/*.c, busted
it("name ...") in tests/lua/*_spec.lua, mocha it('name ...') in tests/node/*.test.js -- and the
cases of tests/cases/*.json, which every layer runs through its harness. Fails (exit 1, one line
per problem) when a name is in some layers and not in all three, unless tests/layer_names.txt
lists it with exactly the layers it is in and why; when an entry of that list no longer says
the truth; when one name is written twice in a layer; and when a case is also written by hand.
Run by ctest as names/layers: python3 tests/check_names.py [repository root].
"""
import json
import os
import re
import sys

LAYERS = ("c", "lua", "node")
NAME = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")
# The name is the first word of the test's title: it("kernel_execute_result", ...) or
# it('kernel_execute_result with more words', ...). Titles built at run time (the case
# harnesses) are not hand-written names and are read from the case files instead.
PATTERNS = {
    "c": (os.path.join("tests", "c"), lambda f: f.endswith(".c"),
          re.compile(r"^TEST\(([a-z0-9_]+)\)", re.M)),
    "lua": (os.path.join("tests", "lua"), lambda f: f.endswith("_spec.lua"),
            re.compile(r"""\bit\(\s*["']([a-z0-9_]+)[ "']""")),
    "node": (os.path.join("tests", "node"), lambda f: f.endswith(".test.js"),
             re.compile(r"""\bit\(\s*["'`]([a-z0-9_]+)[ "'`]""")),
}
HARNESSES = {"c": "tests/c/cases.c", "lua": "tests/lua/cases_spec.lua",
             "node": "tests/node/cases.test.js"}


def hand_written(root, problems):
    """{layer: {name: [file, ...]}} of the tests written by hand."""
    found = {}
    for layer, (sub, wanted, pattern) in PATTERNS.items():
        names = found.setdefault(layer, {})
        for f in sorted(os.listdir(os.path.join(root, sub))):
            if not wanted(f):
                continue
            with open(os.path.join(root, sub, f), encoding="utf-8") as fh:
                for n in pattern.findall(fh.read()):
                    names.setdefault(n, []).append(f)
        for n, files in sorted(names.items()):
            if len(files) > 1:
                problems.append(f"{layer}: {n} is written {len(files)} times ({', '.join(files)})")
    return found


def cases(root, problems):
    """{name: file} of tests/cases/*.json, checking what the harnesses rely on."""
    out = {}
    d = os.path.join(root, "tests", "cases")
    for f in sorted(os.listdir(d)):
        if not f.endswith(".json"):
            continue
        with open(os.path.join(d, f), encoding="utf-8") as fh:
            doc = json.load(fh)
        for c in doc.get("cases", []):
            n = c.get("name", "")
            if n in out:
                problems.append(f"cases: {n} is in {out[n]} and {f}")
            out[n] = f
            if not c.get("about"):
                problems.append(f"cases: {n} ({f}) says nothing in \"about\"")
            if "only" in c and (c["only"] not in ("worker", "main_thread") or not c.get("reason")):
                problems.append(f"cases: {n} ({f}): \"only\" needs a mode and a \"reason\"")
    return out


def allow_list(path, problems):
    """{name: (layers, reason, line number)} from tests/layer_names.txt."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3:
                problems.append(f"layer_names.txt:{i}: want NAME LAYERS REASON")
                continue
            name, layers, reason = parts
            layers = tuple(sorted(layers.split(",")))
            if any(l not in LAYERS for l in layers):
                problems.append(f"layer_names.txt:{i}: layers are c, lua, node: {line}")
            if name in out:
                problems.append(f"layer_names.txt:{i}: {name} is listed twice")
            out[name] = (layers, reason, i)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))
    problems = []
    hand = hand_written(root, problems)
    data = cases(root, problems)
    allowed = allow_list(os.path.join(root, "tests", "layer_names.txt"), problems)

    where = {}
    for layer in LAYERS:
        for n in hand[layer]:
            where.setdefault(n, set()).add(layer)
    for layer, path in HARNESSES.items():
        if not os.path.exists(os.path.join(root, path)):
            problems.append(f"{layer}: the case harness {path} is missing")
    for n in data:
        for layer in LAYERS:
            if n in hand[layer]:
                problems.append(f"{layer}: {n} is a case ({data[n]}) and is also written by hand "
                                f"({', '.join(hand[layer][n])})")
        where.setdefault(n, set()).update(LAYERS)

    for n, layers in sorted(where.items()):
        if not NAME.match(n):
            problems.append(f"{n}: not a <concept>_<behaviour> name")
        have = tuple(sorted(layers))
        if have == LAYERS:
            if n in allowed:
                problems.append(f"layer_names.txt:{allowed[n][2]}: {n} is in every layer now: "
                                "remove it from the list")
            continue
        if n not in allowed:
            missing = ", ".join(l for l in LAYERS if l not in layers)
            problems.append(f"{n}: in {', '.join(have)}, missing in {missing} (write it there, "
                            "or list it in tests/layer_names.txt with the reason)")
        elif allowed[n][0] != have:
            problems.append(f"layer_names.txt:{allowed[n][2]}: {n} is listed for "
                            f"{','.join(allowed[n][0])} but is in {','.join(have)}")
    for n, (_, _, i) in sorted(allowed.items()):
        if n not in where:
            problems.append(f"layer_names.txt:{i}: {n} is in no layer: remove it from the list")

    for p in problems:
        print(p)
    total = len(where)
    print(f"names/layers: {total} behaviours ({len(data)} cases run by all three harnesses), "
          f"{len(allowed)} allowed in fewer layers, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
