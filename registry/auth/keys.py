"""Token signing and verification keys.

The built-in issuer signs with `auth.token.signing_key` (which must exist), or
with a P-256 key generated on first start and kept in the storage: on the filesystem
in the data directory (mode 0600), on S3 in the bucket, so replicas sharing it agree
with no key to distribute. Creation is race-free either way: on disk the key is
written aside and hard-linked into place, in a bucket it is stored by a conditional
write (If-None-Match); when several workers, replicas or restarts race, exactly one
key wins and every process reads that one.
An external issuer is trusted through its PEM public key (or certificate) or
a JWKS file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from storage.created_once import KeepsChangingError, create_once
from storage.driver import StorageDriver


class KeyConfigError(Exception):
    """A configured key cannot be used; the message says which and why."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    key: Any
    algorithms: tuple[str, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def algorithms_for(public_key: Any) -> tuple[str, ...]:
    """The only algorithms a key may verify with (never `none`, never HMAC)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if public_key.curve.name not in by_curve:
            raise KeyConfigError(f"unsupported elliptic curve {public_key.curve.name}")
        return (by_curve[public_key.curve.name],)
    if isinstance(public_key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ("EdDSA",)
    raise KeyConfigError(f"unsupported key type {type(public_key).__name__}")


def key_id(public_key: Any) -> str:
    """RFC 7638 JWK thumbprint of the key."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members: dict[str, str] = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        size = (public_key.curve.key_size + 7) // 8
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        members = {
            "crv": curve.get(public_key.curve.name, public_key.curve.name),
            "kty": "EC",
            "x": _b64(numbers.x.to_bytes(size, "big")),
            "y": _b64(numbers.y.to_bytes(size, "big")),
        }
    else:
        numbers = public_key.public_numbers()
        members = {
            "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class SigningKey:
    private: Any
    kid: str
    algorithm: str

    @classmethod
    def from_pem(cls, pem: bytes, source: str) -> SigningKey:
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise KeyConfigError(
                f"{source}: not an unencrypted PEM private key ({error})"
            ) from None
        public = private.public_key()
        return cls(private, key_id(public), algorithms_for(public)[0])

    def verification_key(self) -> VerificationKey:
        return VerificationKey(self.kid, self.private.public_key(), (self.algorithm,))


def load_signing_key(path: Path) -> SigningKey:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise KeyConfigError(f"cannot read signing key {path}: {error.strerror}") from None
    return SigningKey.from_pem(pem, str(path))


def load_or_create_signing_key(path: Path) -> SigningKey:
    if not path.exists():
        _create_exclusively(path)
    return load_signing_key(path)


async def load_or_create_stored_signing_key(driver: StorageDriver, key: str) -> SigningKey:
    """The signing key stored at `key`, created there by whichever process comes first
    (`storage.created_once`)."""
    source = f"signing key {key} in the storage"
    try:
        return SigningKey.from_pem(await create_once(driver, key, _new_pem), source)
    except KeepsChangingError:
        message = f"{source}: could not be created or read (it keeps changing)"
        raise KeyConfigError(message) from None


def _new_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_exclusively(path: Path) -> None:
    pem = _new_pem()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        # Fails if another process got there first: then theirs wins.
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def load_public_keys(pem_path: Path | None, jwks_path: Path | None) -> list[VerificationKey]:
    """Keys of an external issuer: a PEM public key or certificate, and/or a JWKS file."""
    keys: list[VerificationKey] = []
    if pem_path is not None:
        data = _read(pem_path)
        try:
            if b"BEGIN CERTIFICATE" in data:
                public = x509.load_pem_x509_certificate(data).public_key()
            else:
                public = serialization.load_pem_public_key(data)
        except ValueError as error:
            raise KeyConfigError(
                f"{pem_path}: not a PEM public key or certificate ({error})"
            ) from None
        keys.append(VerificationKey(key_id(public), public, algorithms_for(public)))
    if jwks_path is not None:
        try:
            jwks = jwt.PyJWKSet.from_json(_read(jwks_path).decode())
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError) as error:
            raise KeyConfigError(f"{jwks_path}: not a usable JWKS ({error})") from None
        for jwk in jwks.keys:
            allowed = algorithms_for(jwk.key)
            if jwk.algorithm_name in allowed:
                allowed = (jwk.algorithm_name,)
            keys.append(VerificationKey(jwk.key_id or key_id(jwk.key), jwk.key, allowed))
    return keys


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise KeyConfigError(f"cannot read {path}: {error.strerror}") from None
