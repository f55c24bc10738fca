"""The design notes that code, tests, recipes and docs cite live in the repository, and every citation
of them can be followed: it names the file under docs/, and a cited trap or invariant is a numbered
item of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

#: the cited notes -> the word that numbers their items
NOTES = {"docs/method.md": "trap", "docs/architecture.md": "invariant"}
#: the sections of each note that hold its numbered items
SECTIONS = {"docs/method.md": "## Traps", "docs/architecture.md": "## Invariants"}
SKIP_DIRS = {".git", ".venv", "__pycache__", "runs", "wandb", ".pytest_cache", "build"}
SUFFIXES = {".py", ".md", ".toml"}

# A path-like token ending in one of the notes' file names (a bare name, docs/..., or any other path).
CITATION = re.compile(r"(?<![\w./-])[\w./-]*(?<![\w-])(?P<name>method|architecture)[.]md\b")
# What may follow a citation: ", invariant 2", " trap 7", ": traps 3 and 4".
FOLLOWER = re.compile(r"[\s,:;(]*(?P<word>trap|invariant)s?\s+(?P<numbers>\d+(?:\s*(?:,|and|to|-|–)\s*\d+)*)")
# What may precede one: "trap 7 of docs/method.md", "invariant 2 in docs/architecture.md".
LEADER = re.compile(r"(?P<word>trap|invariant)s?\s+(?P<numbers>\d+(?:\s*(?:,|and|to|-|–)\s*\d+)*)\s+(?:of|in)\s+$")


def text_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if path.suffix in SUFFIXES and path.is_file() and path != Path(__file__):  # this file quotes examples
            files.append(path)
    return files


def cited_in(line: str) -> list[tuple[str, str | None, list[int]]]:
    """The citations in one line: (cited path, numbering word or None, numbers)."""
    found = []
    for m in CITATION.finditer(line):
        word, numbers = None, []
        for hit in (FOLLOWER.match(line, m.end()), LEADER.search(line[: m.start()])):
            if hit:
                word = hit["word"]
                numbers += [int(n) for n in re.findall(r"\d+", hit["numbers"])]
        found.append((m.group(0), word, numbers))
    return found


def citations() -> list[tuple[str, int, str, str | None, list[int]]]:
    """Every citation in the repository: (file, line, cited path, numbering word or None, numbers)."""
    found = []
    for path in text_files():
        rel = path.relative_to(ROOT).as_posix()
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            found += [(rel, lineno, *c) for c in cited_in(line)]
    return found


def numbered_items(note: str) -> set[int]:
    """The numbers of the ``N. `` items in the note's numbered section."""
    text = (ROOT / note).read_text(encoding="utf-8")
    head = SECTIONS[note]
    assert head in text, f"{note} has no section '{head}'"
    section = text.split(head, 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in re.findall(r"^(\d+)\. ", section, flags=re.MULTILINE)}


@pytest.mark.parametrize("note", sorted(NOTES))
def test_the_cited_notes_exist_with_their_numbered_items(note):
    assert (ROOT / note).is_file(), f"{note} is missing"
    items = numbered_items(note)
    assert items and items == set(range(1, max(items) + 1)), f"{note}: numbered items {sorted(items)} are not 1..N"


def test_the_scan_sees_the_citations():
    """The scan finds known citations (a regex that matched nothing would pass the checks below)."""
    files = {c[0] for c in citations()}
    assert "docs/plugins.md" in files and "tests/test_mge.py" in files
    assert cited_in("(architecture.md, invariant 2)") == [("architecture.md", "invariant", [2])]
    assert cited_in("see /elsewhere/method.md trap 12") == [("/elsewhere/method.md", "trap", [12])]
    assert cited_in("traps 3 and 4 of docs/method.md") == [("docs/method.md", "trap", [3, 4])]
    assert cited_in("performance.md and xmethod.md") == []


def test_every_citation_names_the_notes_under_docs():
    wrong = [f"{f}:{n}: {cited}" for f, n, cited, _, _ in citations() if cited not in NOTES]
    assert not wrong, ("cite the design notes as docs/method.md / docs/architecture.md:\n  " + "\n  ".join(wrong))


def test_every_cited_trap_and_invariant_exists():
    items = {note: numbered_items(note) for note in NOTES}
    wrong = []
    for f, n, cited, word, numbers in citations():
        if word is None or cited not in NOTES:
            continue
        if word != NOTES[cited]:
            wrong.append(f"{f}:{n}: {cited} has no {word}s (its items are {NOTES[cited]}s)")
        wrong += [f"{f}:{n}: {cited} has no {word} {k}" for k in numbers if k not in items[cited]]
    assert not wrong, "\n  ".join(["citations of items that do not exist:", *wrong])
