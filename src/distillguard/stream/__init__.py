"""Real-time detection: the online detector, log replay and broker consumers."""

from .online import OnlineDetector, events_from_dicts

__all__ = ["OnlineDetector", "events_from_dicts"]
