"""Secrets from a JSON file: ``{"<tenant>": {"<name>": "<secret>"}, "*": {...}}``.

``"*"`` holds secrets shared by every tenant; a tenant's own entry wins. The file is read on
every issue, so a secret changed in it takes effect at the next call without a restart. A file
other users can read is refused: it holds every tenant's secrets.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from autonomic.errors import ConfigError, NotFound
from autonomic.ports.credentials import SecretSource


class FileSecrets(SecretSource):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            mode = self.path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"the secrets file {self.path} can be read by other users",
                    hint=f"chmod 600 {self.path}",
                )
            data = json.loads(self.path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the secrets file {self.path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"the secrets file {self.path} is not JSON (line {exc.lineno})",
                hint='write {"tenant": {"name": "secret"}, "*": {...}}',
            ) from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ConfigError(
                f"the secrets file {self.path} must map tenants to {{name: secret}} objects"
            )
        return data

    def secret(self, tenant: str, name: str) -> str:
        data = self._load()
        for table in (data.get(tenant, {}), data.get("*", {})):
            value = table.get(name)
            if isinstance(value, str) and value:
                return value
        raise NotFound(
            f"no secret {name!r} for tenant {tenant} in {self.path}",
            hint=f'add it under "{tenant}" (or "*" for every tenant)',
        )
