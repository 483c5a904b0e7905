"""Base class for every typed config section: unknown keys are errors, values are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys fail; assignment is validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
