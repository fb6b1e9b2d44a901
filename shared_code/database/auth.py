"""Entra ID authentication to Azure Database for PostgreSQL: a fresh access token as the password, no secret."""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import make_conninfo

from ..errors import ConfigError, render_error

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


# Azure's load balancer drops a TCP flow idle for about 4 minutes without telling either end; a keepalive every 30 s
# keeps the flow alive, and a dead peer is noticed after ~60 s (30 + 3 x 10) instead of the kernel's two hours.
# tcp_user_timeout bounds how long sent data may stay unacknowledged (a statement on a dead flow) to 60 s.
TCP_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
                  "tcp_user_timeout": "60000"}


def with_tcp_keepalives(dsn: str) -> str:
    """The DSN with TCP keepalives and tcp_user_timeout, unless the DSN sets them itself (libpq and ADBC read both)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(dsn)
    missing = {k: v for k, v in TCP_KEEPALIVES.items() if k not in given}
    return make_conninfo(dsn, **missing) if missing else dsn
