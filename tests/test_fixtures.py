"""The genuine data fixtures are in the repository, complete and byte-identical to what
fixtures/SOURCES.md records; the loader tests read them and fail (never skip) without them."""
from __future__ import annotations

import hashlib
import re

from tests.helpers import FIXTURES

_ROW = re.compile(r"^\|\s*([^|\s]+\.(?:jpg|png|xml|txt|pt|md|py))\s*\|(?:.*\|)?\s*([0-9a-f]{40})\b[^|]*\|\s*$")
_SECTION = re.compile(r"^##\s+(\S+)")


def _git_blob_sha1(data: bytes) -> str:
    """What ``git hash-object`` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _recorded_blobs() -> dict[str, str]:
    """``{path under fixtures/: blob}`` from the tables of SOURCES.md."""
    recorded, section = {}, ""
    for line in (FIXTURES / "SOURCES.md").read_text().splitlines():
        if heading := _SECTION.match(line):
            section = heading.group(1)
        elif row := _ROW.match(line):
            name = row.group(1)
            path = name if name.startswith(section + "/") else f"{section}/{name}"
            recorded[path] = row.group(2)
    return recorded


def test_every_fixture_file_is_recorded_in_sources_with_its_exact_bytes():
    recorded = _recorded_blobs()
    present = {
        str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*")
        if p.is_file() and p.name != "SOURCES.md" and not p.name.startswith(".")
    }
    assert len(recorded) == 31 + 7  # genuine data files + the legacy checkpoints (README, script, 5 files)
    assert present == set(recorded), "files in tests/fixtures and the SOURCES.md tables differ"
    changed = [path for path, blob in recorded.items() if _git_blob_sha1((FIXTURES / path).read_bytes()) != blob]
    assert not changed, f"fixture bytes differ from SOURCES.md: {changed}"
