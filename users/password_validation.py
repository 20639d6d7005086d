"""A password validator Django lacks: enough different characters, not only blanks."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


class VarietyValidator:
    """Refuse passwords of fewer than ``min_distinct`` different characters, or only whitespace
    ("        ", "aaaaaaaa", "abababab"); pass-phrases of several words pass easily."""

    def __init__(self, min_distinct: int = 4) -> None:
        self.min_distinct = min_distinct

    def validate(self, password: str, user: Any = None) -> None:
        if not password.strip():
            raise ValidationError("This password is only spaces.", code="password_blank")
        if len(set(password)) < self.min_distinct:
            raise ValidationError(
                f"This password repeats itself: use at least {self.min_distinct} different characters.",
                code="password_too_repetitive",
            )

    def get_help_text(self) -> str:
        return f"Your password can't be only spaces, and needs at least {self.min_distinct} different characters."
