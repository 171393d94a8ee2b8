"""Loads the demo district's departments and issues each an API token (kept in .local, never committed)."""

from __future__ import annotations

from pathlib import Path

from shared.auth import issue_token, upsert_departments
from shared.db import Conn
from shared.grid import load_grid
from shared.settings import ROOT, Settings

TOKENS_FILE = ROOT / ".local" / "demo-tokens.env"


async def seed_district(conn: Conn, settings: Settings, tokens_file: Path = TOKENS_FILE) -> dict[str, str]:
    """Departments from the district file; one fresh token each, written to `tokens_file` (mode 600)."""
    grid = load_grid(settings.district_file)
    await upsert_departments(conn, grid.departments)
    tokens = {d["code"]: await issue_token(conn, d["code"], "demo") for d in grid.departments}
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    tokens_file.write_text("".join(f"{code}={tok}\n" for code, tok in tokens.items()))
    tokens_file.chmod(0o600)
    return tokens
