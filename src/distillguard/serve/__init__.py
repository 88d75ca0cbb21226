"""Decision service, ASGI middleware and gateway hooks (issue 5)."""

from .engine import DecisionEngine, TokenBuckets
from .enforce import record_from_request, strip_reasoning

__all__ = ["DecisionEngine", "TokenBuckets", "record_from_request", "strip_reasoning"]
