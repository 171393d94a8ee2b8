"""Events of the scoring context."""

from __future__ import annotations
