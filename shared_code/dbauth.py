"""Entra ID authentication to Azure Database for PostgreSQL: a fresh access token as the password, no secret."""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import make_conninfo

from .errors import ConfigError, render_error

SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
_credential: Any = None


def _default_credential() -> Any:
    global _credential
    if _credential is None:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        client_id = os.environ.get("AZURE_CLIENT_ID")
        _credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
    return _credential


def with_entra_token(dsn: str, credential: Any = None) -> str:
    """The DSN with an access token as its password; the credential caches and refreshes tokens."""
    try:
        token = (credential or _default_credential()).get_token(SCOPE).token
    except Exception as error:  # noqa: BLE001 - azure-identity raises several unrelated types
        raise ConfigError(
            f"ARCHIVER_DATABASE_AUTH=entra: could not get an Entra ID token for PostgreSQL ({render_error(error)}). "
            "Check the managed identity (AZURE_CLIENT_ID) and that it is a database role."
        ) from None
    return make_conninfo(dsn, password=token)
