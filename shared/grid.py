"""The four-level grid (district / township / community / unit grid) and grid paths.

A grid path is `district/township/community/grid`, cut at any level: `changtai/wuan` is a
township. Ranking, access control and partitioning all use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator

_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class GridLevel(IntEnum):
    DISTRICT = 1
    TOWNSHIP = 2
    COMMUNITY = 3
    GRID = 4


@lru_cache(maxsize=65536)
def validate_grid_path(value: str) -> str:
    """Check the path's shape (1 to 4 lower-case segments); existence is the Grid's business."""
    parts = value.split("/")
    if not 1 <= len(parts) <= 4 or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError("grid path must be 1-4 segments of [a-z0-9-], e.g. 'changtai/wuan/c01/g03'")
    return value


GridPath = Annotated[str, AfterValidator(validate_grid_path)]


def level_of(path: str) -> GridLevel:
    return GridLevel(path.count("/") + 1)


def parent_of(path: str) -> str | None:
    """One level up, or None for a district."""
    return path.rsplit("/", 1)[0] if "/" in path else None


def cut(path: str, level: GridLevel) -> str:
    """The ancestor of `path` at `level` (the path itself if it is not deeper)."""
    return "/".join(path.split("/")[: int(level)])


def within(path: str, area: str) -> bool:
    """True if `path` is `area` or lies inside it."""
    return path == area or path.startswith(area + "/")


@dataclass(frozen=True)
class GridNode:
    path: str
    name: str
    kind: str
    population: int = 0
    children: tuple[str, ...] = field(default_factory=tuple)

    @property
    def level(self) -> GridLevel:
        return level_of(self.path)


class Grid:
    """A district's grid loaded from its data file: every node by path, with names and populations."""

    def __init__(self, raw: dict[str, Any]):
        self.version: int = int(raw.get("version", 1))
        d = raw["district"]
        self.district: str = d["code"]
        self.nodes: dict[str, GridNode] = {}
        children: dict[str, list[str]] = {self.district: []}
        pops: dict[str, int] = {}
        names = {self.district: d["name"]}
        kinds = {self.district: "district"}
        for t in raw["townships"]:
            tp = f"{self.district}/{t['code']}"
            children[self.district].append(tp)
            children[tp] = []
            names[tp], kinds[tp] = t["name"], t["kind"]
        for c in raw["communities"]:
            tp = f"{self.district}/{c['township']}"
            cp = f"{tp}/{c['code']}"
            children[tp].append(cp)
            names[cp], kinds[cp] = c["name"], c["kind"]
            pops[cp] = int(c["population"])
            grids = [f"{cp}/g{i:02d}" for i in range(1, int(c["grids"]) + 1)]
            children[cp] = grids
            for g in grids:
                names[g], kinds[g] = f"{c['name']}{g[-2:]}网格", "grid"
                children[g] = []
        for tp in children[self.district]:
            pops[tp] = sum(pops[cp] for cp in children[tp])
        pops[self.district] = sum(pops[tp] for tp in children[self.district])
        for path, kids in children.items():
            self.nodes[path] = GridNode(path, names[path], kinds[path], pops.get(path, 0), tuple(kids))
        self.departments: list[dict[str, Any]] = list(raw.get("departments", []))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self.nodes

    def node(self, path: str) -> GridNode:
        return self.nodes[path]

    def townships(self) -> list[str]:
        return list(self.nodes[self.district].children)

    def at_level(self, level: GridLevel) -> list[str]:
        return [p for p in self.nodes if level_of(p) == level]


def load_grid(path: Path) -> Grid:
    return Grid(yaml.safe_load(path.read_text(encoding="utf-8")))


@lru_cache(maxsize=4)
def cached_grid(path: Path) -> Grid:
    return load_grid(path)
