"""The standards table (一图一标准) as loaded from its versioned data file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.events.inspection import CategoryStandard

STANDARDS_FILE = Path(__file__).with_name("standards.yaml")


@dataclass(frozen=True)
class StandardsTable:
    version: int
    categories: dict[str, CategoryStandard]

    def category(self, code: str) -> CategoryStandard:
        return self.categories[code]


def load_standards(path: Path = STANDARDS_FILE) -> StandardsTable:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    cats = [CategoryStandard.model_validate(c) for c in raw["categories"]]
    return StandardsTable(int(raw["version"]), {c.code: c for c in cats})
