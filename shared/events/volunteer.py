"""Events of the volunteer context."""

from __future__ import annotations
