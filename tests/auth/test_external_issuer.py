"""Trusting tokens from an external token server: PEM public key, certificate or JWKS."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from registry.auth.keys import key_id
from tests.support.auth import bearer

ISSUER, SERVICE = "auth.example", "registry.example"


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, kid: str | None, name: str = "team/app", **claims) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "someone",
        "aud": SERVICE,
        "exp": now + 60,
        "iat": now,
        "access": [{"type": "repository", "name": name, "actions": ["pull"]}],
        **claims,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, "RS256", headers=headers)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_pem(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def jwks(key: rsa.RSAPrivateKey) -> bytes:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="key-1", alg="RS256", use="sig")
    return json.dumps({"keys": [jwk]}).encode()


@pytest.mark.parametrize("kind", ["public_key", "certificate", "jwks"])
async def test_external_tokens_are_trusted(
    kind: str, issuer_key, make_config, open_client, tmp_path: Path
) -> None:
    path = tmp_path / "issuer"
    if kind == "jwks":
        path.write_bytes(jwks(issuer_key))
        settings = {"jwks": str(path)}
        kid: str | None = "key-1"
    else:
        path.write_bytes(
            public_pem(issuer_key) if kind == "public_key" else certificate_pem(issuer_key)
        )
        settings = {"public_key": str(path)}
        kid = key_id(issuer_key.public_key())
    token_settings = {
        **settings,
        "issuer": ISSUER,
        "service": SERVICE,
        "realm": "https://auth.example/token",
    }
    client = open_client(make_config("token", token=token_settings))
    response = await client.get("/v2/team/app/tags/list", headers=bearer(token(issuer_key, kid)))
    assert response.status_code == 404  # past the access check
    # Without a kid, the only configured key is used.
    response = await client.get("/v2/team/app/tags/list", headers=bearer(token(issuer_key, None)))
    assert response.status_code == 404
    response = await client.post(
        "/v2/team/app/blobs/uploads/", headers=bearer(token(issuer_key, kid))
    )
    assert response.status_code == 403
    wrong_audience = token(issuer_key, kid, aud="dockyard")
    response = await client.get("/v2/team/app/tags/list", headers=bearer(wrong_audience))
    assert response.status_code == 401
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = await client.get("/v2/team/app/tags/list", headers=bearer(token(other_key, kid)))
    assert response.status_code == 401
    # No built-in token endpoint behind an external issuer.
    assert (await client.get("/auth/token")).status_code == 404
    response = await client.get("/v2/")
    assert (
        'realm="https://auth.example/token",service="registry.example"'
        in (response.headers["www-authenticate"])
    )
