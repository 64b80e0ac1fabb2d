"""What every tab shares: the settings and the open workspace."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from core.settings import Settings, load_settings
from core.workspace import Workspace


@dataclass
class AppState:
    settings: Settings = field(default_factory=load_settings)

    @cached_property
    def ws(self) -> Workspace:
        return Workspace(self.settings.workspace, self.settings)
