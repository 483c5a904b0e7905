"""Base class for every typed config section: unknown keys are errors, values are validated."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator


class Section(BaseModel):
    """A config section. Unknown keys fail; assignment is validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _auto_or_positive(value: Any) -> float | str:
    if value == "auto":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number > 0:
        raise ValueError("expected a number > 0 or 'auto'")
    return number


AutoOrPositive = Annotated[float | Literal["auto"], PlainValidator(_auto_or_positive)]
"""A positive number, or `auto` (resolved later against the cluster)."""
