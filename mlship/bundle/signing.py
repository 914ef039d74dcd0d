"""Signing bundles: `mlship keygen`, `mlship sign BUNDLE --key KEY`, `mlship verify BUNDLE --key PUB`.

The signature is over the exact bytes of mlship.json, which pin the sha256 of every other file of the bundle; it is
written beside it as mlship.sig (a file the contract allows unlisted). Keys and signatures are Minisign's format,
through py-minisign (Ed25519; the secret key encrypted with scrypt unless made without a password), so the
`minisign` tool reads them too: `minisign -V -p mlship.pub -m BUNDLE/mlship.json -x BUNDLE/mlship.sig`. Why this and
not Sigstore: Sigstore's keyless signing needs an OIDC login, Fulcio and Rekor over the network, which air-gapped
installs (the onprem target's users) do not have; a Minisign key pair works offline and fits in two small files.
docs/BUNDLE.md "Signatures".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BundleError, MlshipError
from ..runtime._boot import sha256_bytes
from ..runtime._contract import MANIFEST_NAME, SIGNATURE_NAME, sha256_file
from .manifest import open_bundle

PUBLIC_SUFFIX = ".pub"


class SigningError(MlshipError):
    """A key cannot be made, read or used."""


def _minisign() -> Any:
    import minisign  # type: ignore[import-untyped]  # py-minisign ships no type information

    return minisign


def public_key_path(secret: Path) -> Path:
    return secret.with_name(secret.name.removesuffix(".key") + PUBLIC_SUFFIX)


def generate_key(secret: Path, *, password: str | None, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair: `secret` (mode 0600; encrypted with `password` unless it is None) and, beside it,
    the public key (KEY.pub, or KEY without .key + .pub). Returns both paths."""
    public = public_key_path(secret)
    for path in (secret, public):
        if path.exists() and not force:
            raise SigningError(f"{path} already exists", hint="choose another --output, or pass --force to replace it")
    minisign = _minisign()
    pair = minisign.KeyPair.generate()
    with pair.secret_key as key:
        if password is not None:
            key.encrypt(password)
        key.untrusted_comment = "mlship secret key" + ("" if password is not None else " (no password)")
        _write_private(secret, bytes(key) + b"\n")
    pair.public_key.untrusted_comment = "mlship public key"
    _write_atomic(public, bytes(pair.public_key) + b"\n", 0o644)
    return secret, public


def key_is_encrypted(key_file: Path) -> bool:
    """Whether the secret key in `key_file` needs a password (False when it cannot be read: sign_bundle says why)."""
    try:
        with _minisign().SecretKey.from_file(key_file) as key:
            return bool(key.is_encrypted())
    except (OSError, ValueError):
        return False


def sign_bundle(bundle: Path, key_file: Path, *, password: str | None) -> Path:
    """Check the bundle (a damaged one is not signed), then sign its mlship.json with the secret key in
    `key_file`, and write BUNDLE/mlship.sig. Returns the signature's path."""
    checked = open_bundle(bundle)
    minisign = _minisign()
    try:
        key = minisign.SecretKey.from_file(key_file)
    except FileNotFoundError:
        raise SigningError(f"the secret key {key_file} does not exist",
                           hint="make one with `mlship keygen --output KEY`") from None
    except (OSError, ValueError) as exc:
        raise SigningError(f"{key_file} is not a Minisign secret key: {exc}",
                           hint="pass the secret key (`mlship keygen` writes it), not the .pub file") from None
    with key:
        if key.is_encrypted():
            if password is None:
                raise SigningError(f"the secret key {key_file} is protected by a password",
                                   hint="set MLSHIP_KEY_PASSWORD, or run mlship sign in a terminal to be asked")
            try:
                key.decrypt(password)
            except ValueError:
                raise SigningError(f"wrong password for the secret key {key_file}",
                                   hint="check MLSHIP_KEY_PASSWORD") from None
        manifest = checked.path / MANIFEST_NAME
        data = manifest.read_bytes()
        comment = f"mlship bundle {checked.manifest.name} {checked.manifest.version} file:{MANIFEST_NAME}"
        signature = key.sign(data, trusted_comment=comment[:250],
                             untrusted_comment=f"signature of {MANIFEST_NAME} by mlship")
    if sha256_file(manifest) != sha256_bytes(data):
        raise BundleError(f"{manifest} changed while it was being signed", hint="run mlship sign again")
    target = checked.path / SIGNATURE_NAME
    _write_atomic(target, bytes(signature) + b"\n", 0o644)
    return target


def check_signature(bundle: Path, public_key: Path) -> bytes:
    """The bytes of BUNDLE/mlship.json, once mlship.sig is found to be their signature by `public_key`'s secret
    key. Raises BundleError (unsigned, wrong key, forged or changed manifest) with what to do."""
    minisign = _minisign()
    try:
        key = minisign.PublicKey.from_file(public_key)
    except FileNotFoundError:
        raise SigningError(f"the public key {public_key} does not exist",
                           hint="pass the .pub file the bundle's publisher gave you") from None
    except (OSError, ValueError) as exc:
        raise SigningError(f"{public_key} is not a Minisign public key: {exc}",
                           hint="pass the .pub file (`mlship keygen` writes it beside the secret key)") from None
    root = Path(bundle)
    manifest, sig = root / MANIFEST_NAME, root / SIGNATURE_NAME
    if not manifest.is_file():
        raise BundleError(f"{root} is not an mlship bundle: {MANIFEST_NAME} is missing",
                          hint="pass the directory `mlship package` wrote (e.g. dist/iris)")
    if not sig.is_file() or sig.is_symlink():
        raise BundleError(f"{root} is not signed: {SIGNATURE_NAME} is missing",
                          hint="ask its publisher for the signed bundle (mlship sign BUNDLE --key KEY signs one)")
    try:
        signature = minisign.Signature.from_bytes(sig.read_bytes())
    except ValueError as exc:
        raise BundleError(f"{sig} is not a Minisign signature: {exc}",
                          hint="ask the bundle's publisher for the signed bundle again") from None
    data = manifest.read_bytes()
    try:
        key.verify(data, signature)
    except ValueError as exc:
        if "key identifiers" in str(exc):
            raise BundleError(
                f"{sig} was made by another key than the one {public_key} belongs to",
                hint="use the public key of whoever signed this bundle; if it should be this one, do not use "
                "the bundle",
            ) from None
        raise BundleError(
            f"the signature {sig} does not match {manifest}: the manifest was changed or forged after it was "
            "signed",
            hint="do not use this bundle; get it again from its publisher",
        ) from None
    return data


def _write_private(path: Path, data: bytes) -> None:
    _write_atomic(path, data, 0o600)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
