"""What every tab shares: the settings, the open workspace, and who may read what (the access policy)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from core.access import AccessPolicy
from core.settings import Settings, load_settings
from core.workspace import Workspace


@dataclass
class AppState:
    settings: Settings = field(default_factory=load_settings)
    policy: AccessPolicy = field(default_factory=AccessPolicy)      # app.build_app sets the real one

    @cached_property
    def ws(self) -> Workspace:
        return Workspace(self.settings.workspace, self.settings)

    def role(self, request) -> str:
        """The role behind a Gradio request (what a tab may show it; the guard checks what it may do)."""
        return self.policy.role_of(request)
