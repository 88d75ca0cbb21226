"""Content signals computed locally: task classification and prompt-template mining."""

from .classify import (TaskClassifier, cot_score, load_default, predict_tasks,
                       rule_based_task, sensitive_score)
from .templates import account_template_stats, mine_templates, normalize_prompts

__all__ = [
    "TaskClassifier", "load_default", "rule_based_task", "cot_score", "sensitive_score",
    "predict_tasks", "normalize_prompts", "mine_templates", "account_template_stats",
]
