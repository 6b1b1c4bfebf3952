"""docs/operations.md: its links resolve, and its backup command copies a live WAL database
(commits still in the -wal file included) while the writer keeps its connection open."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"


def test_relative_links_and_named_files_exist() -> None:
    text = DOC.read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        assert (DOC.parent / target).exists(), target
    for path in re.findall(r"`(docker/[\w./-]+)`", text):
        assert (ROOT / path).exists(), path
    readme = (ROOT / "README.md").read_text()
    assert "docs/operations.md" in readme


def backup_command() -> str:
    text = DOC.read_text()
    match = re.search(r'python -c "(import sqlite3[^"]+)"', text)
    assert match is not None
    return match.group(1)


def test_backup_command_copies_a_live_wal_database(tmp_path: Path) -> None:
    live = tmp_path / "crm.sqlite3"
    writer = sqlite3.connect(live)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the commits in the -wal file
        writer.execute("CREATE TABLE ticket (id TEXT PRIMARY KEY)")
        writer.executemany("INSERT INTO ticket VALUES (?)", [(f"T{i}",) for i in range(100)])
        writer.commit()
        assert Path(f"{live}-wal").stat().st_size > 0
        copy = tmp_path / "backup.sqlite3"
        subprocess.run(
            [sys.executable, "-c", backup_command(), str(live), str(copy)],
            check=True,
            timeout=30,
        )
    finally:
        writer.close()
    reader = sqlite3.connect(copy)
    try:
        assert reader.execute("SELECT count(*) FROM ticket").fetchone() == (100,)
    finally:
        reader.close()
