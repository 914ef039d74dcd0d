"""`mlship keygen`, `mlship sign BUNDLE --key KEY` and `mlship verify BUNDLE --key PUB` (mlship/bundle/signing.py)."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlship.bundle.signing import check_signature, generate_key, sign_bundle
from mlship.errors import BundleError, MlshipError
from mlship.runtime import _contract as contract

MakeBundle = Callable[[str], Path]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_key(tmp_path / "keys" / "release.key", password="correct horse")


@pytest.fixture
def signed(make_bundle: MakeBundle, keys: tuple[Path, Path]) -> Path:
    bundle = make_bundle("iris_frame")
    sign_bundle(bundle, keys[0], password="correct horse")
    return bundle


def test_keygen_writes_a_private_encrypted_key_and_its_public_key(cli: Any, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIP_KEY_PASSWORD", "pw")
    result = cli("keygen", "--output", tmp_path / "ci.key")
    assert result.exit_code == 0, result.output
    secret, public = tmp_path / "ci.key", tmp_path / "ci.pub"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text().startswith("untrusted comment: mlship secret key\n")
    assert public.read_text().startswith("untrusted comment: mlship public key\nRW")
    import minisign  # type: ignore[import-untyped]

    with minisign.SecretKey.from_file(secret) as key:
        assert key.is_encrypted()
    assert cli("keygen", "--output", tmp_path / "ci.key").exit_code == 1  # never overwritten silently
    monkeypatch.delenv("MLSHIP_KEY_PASSWORD")
    refused = cli("keygen", "--output", tmp_path / "other.key")
    assert refused.exit_code == 1 and "no password for the new secret key" in refused.output
    assert cli("keygen", "--output", tmp_path / "other.key", "--no-password").exit_code == 0


def test_a_good_signature_verifies(cli: Any, signed: Path, keys: tuple[Path, Path]) -> None:
    signature = signed / contract.SIGNATURE_NAME
    assert signature.read_text().splitlines()[2] == "trusted comment: mlship bundle iris-frame 0.1.0 file:mlship.json"
    assert check_signature(signed, keys[1]) == (signed / contract.MANIFEST_NAME).read_bytes()
    result = cli("verify", signed, "--key", keys[1])
    assert result.exit_code == 0, result.output
    assert "mlship.sig is a valid signature of its mlship.json" in result.output
    assert "6 golden cases match the notebook" in result.output


def test_sign_through_the_cli_with_the_password_from_the_environment(
        cli: Any, make_bundle: MakeBundle, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle("iris_frame")
    monkeypatch.setenv("MLSHIP_KEY_PASSWORD", "wrong")
    wrong = cli("sign", bundle, "--key", keys[0])
    assert wrong.exit_code == 1 and "wrong password for the secret key" in wrong.output
    assert not (bundle / contract.SIGNATURE_NAME).exists()
    monkeypatch.setenv("MLSHIP_KEY_PASSWORD", "correct horse")
    assert cli("sign", bundle, "--key", keys[0]).exit_code == 0
    check_signature(bundle, keys[1])


def test_a_damaged_bundle_is_not_signed(make_bundle: MakeBundle, keys: tuple[Path, Path]) -> None:
    bundle = make_bundle("iris_frame")
    (bundle / "predictor.py").write_text("# changed\n")
    with pytest.raises(BundleError, match="predictor.py has sha256"):
        sign_bundle(bundle, keys[0], password="correct horse")
    assert not (bundle / contract.SIGNATURE_NAME).exists()


def test_a_tampered_file_fails_verify_even_with_a_valid_signature(cli: Any, signed: Path,
                                                                  keys: tuple[Path, Path]) -> None:
    with (signed / "artifacts" / "values.pkl").open("ab") as stream:
        stream.write(b"x")
    result = cli("verify", signed, "--key", keys[1])
    assert result.exit_code == 1
    assert "artifact artifacts/values.pkl has sha256" in result.output


def test_a_consistent_forgery_fails_verify_key(cli: Any, signed: Path, keys: tuple[Path, Path]) -> None:
    # The forger changes the served code and rewrites mlship.json with the new digest: every digest matches.
    predictor = signed / "predictor.py"
    predictor.write_text(predictor.read_text() + "\n# forged\n")
    manifest = json.loads((signed / contract.MANIFEST_NAME).read_text())
    manifest["artifacts"]["predictor.py"] = hashlib.sha256(predictor.read_bytes()).hexdigest()
    (signed / contract.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    assert cli("verify", signed).exit_code == 0  # without a key, nothing can tell
    result = cli("verify", signed, "--key", keys[1])
    assert result.exit_code == 1
    assert f"error: the signature {signed}/mlship.sig does not match {signed}/mlship.json: the manifest was " \
           "changed or forged after it was signed" in result.output
    assert "hint: do not use this bundle" in result.output
    assert "golden cases" not in result.output  # refused before any of the bundle's code ran
    served = cli("serve", signed, "--key", keys[1])
    assert served.exit_code == 1 and "the manifest was changed or forged after it was signed" in served.output


def test_a_signature_by_another_key_is_refused(cli: Any, signed: Path, tmp_path: Path) -> None:
    _, other = generate_key(tmp_path / "other.key", password=None)
    result = cli("verify", signed, "--key", other)
    assert result.exit_code == 1
    assert f"mlship.sig was made by another key than the one {other} belongs to" in result.output


def test_an_unsigned_bundle_or_a_bad_key_file_is_named(cli: Any, make_bundle: MakeBundle,
                                                       keys: tuple[Path, Path], tmp_path: Path) -> None:
    bundle = make_bundle("iris_frame")
    unsigned = cli("verify", bundle, "--key", keys[1])
    assert unsigned.exit_code == 1 and f"{bundle} is not signed: mlship.sig is missing" in unsigned.output
    (tmp_path / "junk.pub").write_text("not a key\n")
    with pytest.raises(MlshipError, match="junk.pub is not a Minisign public key"):
        check_signature(bundle, tmp_path / "junk.pub")
    with pytest.raises(MlshipError, match="secret key .*missing.key does not exist"):
        sign_bundle(bundle, tmp_path / "missing.key", password=None)
    with pytest.raises(MlshipError, match="is protected by a password"):
        sign_bundle(bundle, keys[0], password=None)


def test_signing_again_after_repackaging_replaces_the_stale_signature(signed: Path, keys: tuple[Path, Path]) -> None:
    read = contract.read(signed)
    contract.write(signed, read.manifest, read.golden)  # what packaging again does
    assert not (signed / contract.SIGNATURE_NAME).exists()
