"""distillguard: find and stop distillation campaigns in LLM API traffic.

Pipeline: read -> fingerprint -> link -> cluster -> score -> explain -> act.
"""

__version__ = "0.1.0"
