"""docs/walkthrough.md stays true to the code (issue 14).

Every reference in it of the form `path/file.py:Name` or `path/file.py:Class.member` must
name a file that exists and, in it, a module-level function, class or constant, or a
class's method, property, class attribute or attribute set in `__init__`: found with
`ast`, so a name in a comment or a string does not count. A JavaScript reference
(`client/chat.js:name`) must name a `function name(` declaration in that file (there is
no JavaScript parser in the standard library). A bare `path/file.ext` must exist.

The walkthrough's wire capture is compared, block title by block title, with a fresh
recording of the same chat by the server's own --trace (tests/trace_capture.py): keys, masks
and ports differ from run to run, what crosses the wire and in which frames does not.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from conftest import ROOT

WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
README = ROOT / "README.md"
REFERENCE = re.compile(r"`((?:[\w.-]+/)*[\w.-]+\.(?:py|js|html|css|md))(?::([\w.]+))?`")
CAPTURE = re.compile(r"<!-- capture: tests/trace_capture.py -->\n```\n(.*?)```", re.S)


def references(text: str) -> list[tuple[str, str | None]]:
    return [(match[1], match[2]) for match in REFERENCE.finditer(text)]


def _members(node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(item.name)
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                for sub in ast.walk(item):  # self.name = ... in __init__
                    if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store)
                            and isinstance(sub.value, ast.Name) and sub.value.id == "self"):
                        names.add(sub.attr)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
            for target in item.targets:  # __slots__ = (...): instance attributes too
                if (isinstance(target, ast.Name) and target.id == "__slots__"
                        and isinstance(item.value, (ast.Tuple, ast.List))):
                    names.update(e.value for e in item.value.elts
                                 if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return names


def python_name_exists(path: Path, dotted: str) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    first, _, rest = dotted.partition(".")
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == first:
            return not rest
        if isinstance(node, ast.ClassDef) and node.name == first:
            if not rest:
                return True
            member, _, deeper = rest.partition(".")
            return not deeper and member in _members(node)
        if not rest and isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == first for t in node.targets):
            return True
        if not rest and isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == first:
            return True
    return False


def missing(text: str) -> list[str]:
    problems = []
    for file, name in references(text):
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{file}: no such file")
        elif name is None:
            continue
        elif file.endswith(".py"):
            if not python_name_exists(path, name):
                problems.append(f"{file}:{name}: not defined there")
        elif file.endswith(".js"):
            if not re.search(rf"\bfunction {re.escape(name)}\(", path.read_text()):
                problems.append(f"{file}:{name}: no such function")
        else:
            problems.append(f"{file}:{name}: names are checked in .py and .js files only")
    return problems


def test_the_checker_finds_what_exists_and_refuses_what_does_not() -> None:
    """The check itself can fail: real names pass, made-up ones are reported."""
    good = ("`websocket/protocol/handshake.py:accept_key` `websocket/chat/server.py:Server._fail` "
            "`websocket/protocol/handshake.py:GUID` `websocket/chat/user.py:User.handshake` "
            "`websocket/net/connection.py:Connection.outbuf` `websocket/chat/user.py:User.data` "
            "`client/chat.js:openSocket` `client/index.html`")
    assert missing(good) == []
    bad = ("`websocket/protocol/handshake.py:no_such` `websocket/chat/server.py:Server.nope` "
           "`websocket/gone.py` `client/chat.js:nothing` `websocket/chat/server.py:log.info` "
           "`websocket/chat/server.py:Server._fail.deeper`")
    assert len(missing(bad)) == 6


def test_every_reference_in_the_walkthrough_exists() -> None:
    text = WALKTHROUGH.read_text()
    found = references(text)
    named = [ref for ref in found if ref[1] is not None]
    assert len(named) >= 40, "the walkthrough names the code it talks about"
    assert missing(text) == []


def test_every_section_of_the_article_is_walked_through() -> None:
    text = WALKTHROUGH.read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    for section in ("The handshake", "The security key", "The API", "Data framing",
                    "The master socket", "The run loop", "The callback", "The client"):
        assert any(h.startswith(section) for h in headings), section
    # Each one says what 2010 did, what went wrong, and what ours does, with a reference.
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        title = block.splitlines()[0]
        if title.startswith(("Contents", "A real capture", "Reading it")):
            continue
        for part in ("**2010:**", "**What went wrong:**", "**Here:**"):
            assert part in block, f"{title}: no {part}"
        assert re.search(r"RFC 6455 §|draft-7[56] §|RFC 9112 §", block), title
        assert any(name for _, name in references(block)), title


def test_the_walkthrough_and_the_readme_map_agree() -> None:
    """Every PHP name in the README's "From the article's PHP to this code" table is
    walked through, and the README links the walkthrough."""
    readme = README.read_text()
    table = readme.split("## From the article's PHP to this code", 1)[1].split("\n## ", 1)[0]
    assert "docs/walkthrough.md" in table
    php_names = set()
    for row in table.splitlines():
        if row.startswith("| `") or row.startswith("| ") and "`" in row.split("|")[1]:
            php_names.update(re.findall(r"`([^`]+)`", row.split("|")[1]))
    assert len(php_names) >= 10
    text = WALKTHROUGH.read_text()
    absent = sorted(name for name in php_names if name not in text)
    assert absent == []


def test_the_capture_is_a_real_chat_with_the_same_frames_as_a_fresh_one() -> None:
    import trace_capture

    text = WALKTHROUGH.read_text()
    capture = CAPTURE.search(text)
    assert capture is not None, "the walkthrough holds a capture from tests/trace_capture.py"
    fresh = trace_capture.chat()
    documented = Counter(trace_capture.titles(capture[1]))
    assert documented == Counter(trace_capture.titles(fresh))
    assert len(documented) >= 10
    # The fixed parts read the same: draft-76's arithmetic (its keys are the draft's own).
    for line in ("digits 4146546015, spaces 5: 4146546015 / 5 = 829309203",
                 "unmasked  00000000  61 6c 69 63 65 3a 20 68  65 6c 6c 6f 20 62 6f 62  "
                 "|alice: hello bob|"):
        assert line in capture[1] and line in fresh
