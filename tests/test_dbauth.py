"""Entra ID database auth: the token becomes the password of both connections (the token service cannot run here)."""

import time

import psycopg
import pytest
from azure.core.credentials import AccessToken

from shared_code.database.auth import SCOPE, with_entra_token
from shared_code.engine import Engine
from shared_code.errors import ConfigError
from shared_code.settings import load_settings


class IssuedToken:
    """A credential at the azure-identity boundary: returns a real AccessToken for the requested scope."""

    def __init__(self, token: str) -> None:
        self.token, self.scopes = token, []

    def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


class Refusing:
    def get_token(self, *scopes: str, **_: object) -> AccessToken:
        raise RuntimeError("ManagedIdentityCredential authentication unavailable")


def test_token_is_the_password_and_connects(pg_dsn):
    credential = IssuedToken("eyJ0eXAiOiJKV1Qi.payload/with=odd+chars")
    dsn = with_entra_token(pg_dsn, credential)
    assert credential.scopes == [(SCOPE,)]
    assert "password=" in dsn and "eyJ0eXAiOiJKV1Qi" in dsn
    with psycopg.connect(dsn) as conn:  # the local server trusts loopback, so any token is accepted
        assert conn.info.password == "eyJ0eXAiOiJKV1Qi.payload/with=odd+chars"
    from shared_code.database.adbc import ArrowConnection

    conn = ArrowConnection(dsn)  # the connection the extraction uses
    try:
        assert conn.cursor().execute("SELECT 1").fetchone() == (1,)
    finally:
        conn.close()


def test_token_failure_is_a_clear_error(pg_dsn):
    with pytest.raises(ConfigError, match="ARCHIVER_DATABASE_AUTH=entra: could not get an Entra ID token"):
        with_entra_token(pg_dsn, Refusing())


def test_settings_fetch_a_token_per_connection(monkeypatch, pg_dsn, tmp_path):
    import shared_code.database.auth as dbauth

    credential = IssuedToken("tok")
    monkeypatch.setattr(dbauth, "_credential", credential)
    settings = load_settings(database_url=pg_dsn, lake_url=tmp_path.as_uri(), database_auth="entra")
    with Engine(settings) as engine:
        assert engine.conn.info.password == "tok"
    assert len(credential.scopes) == 1
