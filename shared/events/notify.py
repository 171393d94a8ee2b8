"""Events of the notify context."""

from __future__ import annotations
