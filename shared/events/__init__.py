"""Event envelope, registry and the catalogue of every context's events.

Importing this package registers every event type (one module per context).
"""

from shared.events import inspection as inspection
from shared.events import notify as notify
from shared.events import scoring as scoring
from shared.events import volunteer as volunteer
from shared.events.envelope import DomainEvent, EventEnvelope
from shared.events.registry import EventDecodeError, registry

__all__ = ["DomainEvent", "EventDecodeError", "EventEnvelope", "registry"]
