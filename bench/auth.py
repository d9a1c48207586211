"""The basic-auth variant: one user, in one htpasswd file both servers read."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from registry.config import Config


@dataclass(frozen=True)
class Credentials:
    user: str = "bench"
    password: str = "bench-secret"

    @property
    def header(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def write_htpasswd(self, path: Path) -> Path:
        import bcrypt  # a dependency of Dockyard's auth

        # Cost 5: what `htpasswd -B` (distribution's documented way) writes by default.
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
        path.write_text(f"{self.user}:{hashed}\n")
        return path


def unsupported_reason() -> str | None:
    """Why this Dockyard cannot run the variant, or None."""
    if "auth" not in Config.model_fields:
        return "this Dockyard has no `auth` configuration yet (the auth branch is not merged)"
    return None
