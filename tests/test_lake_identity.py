"""The lake in Azure with a managed identity: delta-rs gets a bearer token from azure-identity, asked for each access.

No Azure here: the credential is the SDK boundary. It returns real `AccessToken` objects and raises the SDK's own
`ClientAuthenticationError`, as azure-identity's credentials do.
"""

from __future__ import annotations

import time

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared_code.errors import LakeError
from shared_code.storage.lake import Lake

LAKE_URL = "abfss://archive@acct.dfs.core.windows.net/timescale"


class RotatingCredential:
    """Hands out a new token per call, the way azure-identity renews one shortly before it expires."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(f"token-{len(self.scopes)}", int(time.time()) + 3600)


def test_delta_gets_a_fresh_bearer_token_for_each_access():
    lake = Lake(LAKE_URL, client_id="00000000-0000-0000-0000-00000000abcd")
    credential = RotatingCredential()
    lake._credential = credential
    first, second = lake.delta_storage_options(), lake.delta_storage_options()
    assert first == {"account_name": "acct", "bearer_token": "token-1"}
    assert second["bearer_token"] == "token-2"  # never a token cached by us past its renewal
    assert credential.scopes == [("https://storage.azure.com/.default",)] * 2
    assert lake.delta_uri("public.metrics") == f"{LAKE_URL}/public.metrics"


def test_a_credential_failure_names_the_fix():
    class Failing:
        def get_token(self, *_: str, **__: object) -> AccessToken:
            raise ClientAuthenticationError("ManagedIdentityCredential: no identity endpoint\nmore detail")

    lake = Lake(LAKE_URL)
    lake._credential = Failing()
    with pytest.raises(LakeError) as error:
        lake.delta_storage_options()
    message = str(error.value)
    assert "no identity endpoint" in message and "ARCHIVER_LAKE_CLIENT_ID" in message and "more detail" not in message


def test_user_assigned_identity_is_asked_for_by_client_id():
    lake = Lake(LAKE_URL, client_id="00000000-0000-0000-0000-00000000abcd")
    credential = lake._make_credential()
    inner = [type(c).__name__ for c in credential.credentials]
    assert "ManagedIdentityCredential" in inner
    managed = next(c for c in credential.credentials if type(c).__name__ == "ManagedIdentityCredential")
    assert "00000000-0000-0000-0000-00000000abcd" in repr(vars(managed)) or \
        "00000000-0000-0000-0000-00000000abcd" in repr(vars(getattr(managed, "_credential", managed)))


def test_connection_strings_and_local_paths_need_no_token():
    assert Lake("file:///srv/archive").delta_storage_options() == {}
    azurite = Lake(LAKE_URL, "UseDevelopmentStorage=true")
    options = azurite.delta_storage_options()
    assert options["endpoint"] == "http://127.0.0.1:10000/devstoreaccount1" and options["allow_http"] == "true"
    assert "bearer_token" not in options
    assert azurite.delta_uri("public.metrics") == "az://archive/timescale/public.metrics"
