"""Project Wycheproof vectors through the primitives the crypto core uses.

AES-GCM is cryptography's ``AESGCM`` (the envelope), HKDF and PBKDF2 are
cryptography's ``HKDF`` / ``PBKDF2HMAC`` (crypto/kdf.py), HMAC-SHA256 is the
stdlib ``hmac.digest`` (crypto/search.py, search tokens). Every case is its
own test, named by its ``tcId``; valid cases must give the expected output and
invalid ones must be rejected.
"""

from __future__ import annotations

import hmac

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from support.vectors import WycheproofCase, as_params, wycheproof_cases

# The envelope uses 96-bit nonces and 128-bit tags only; other IV sizes are not our format.
AES_GCM = wycheproof_cases(
    "aes_gcm_test.json", where=lambda g: g["ivSize"] == 96 and g["tagSize"] == 128
)
HKDF_SHA256 = wycheproof_cases("hkdf_sha256_test.json")
HMAC_SHA256 = wycheproof_cases("hmac_sha256_test.json")
PBKDF2_SHA256 = wycheproof_cases("pbkdf2_hmacsha256_test.json")

# What the files hold at the pinned upstream commit; a change here means the files changed.
EXPECTED_COUNTS = {
    "aes_gcm_test.json": (AES_GCM, 197),
    "hkdf_sha256_test.json": (HKDF_SHA256, 86),
    "hmac_sha256_test.json": (HMAC_SHA256, 174),
    "pbkdf2_hmacsha256_test.json": (PBKDF2_SHA256, 60),
}


@pytest.mark.parametrize("file_name", sorted(EXPECTED_COUNTS))
def test_every_selected_case_of_each_file_runs_and_is_valid_or_invalid(file_name: str) -> None:
    cases, expected = EXPECTED_COUNTS[file_name]
    assert len(cases) == expected
    assert len({case.tc_id for case in cases}) == expected
    # The tests below treat "not valid" as "must be rejected": no third kind may hide there.
    assert {case.result for case in cases} <= {"valid", "invalid"}


def test_aes_gcm_filter_keeps_every_key_size_and_both_outcomes() -> None:
    key_sizes = {case.group["keySize"] for case in AES_GCM}
    assert key_sizes == {128, 192, 256}
    for size in key_sizes:
        outcomes = {case.result for case in AES_GCM if case.group["keySize"] == size}
        assert outcomes == {"valid", "invalid"}
    assert all(len(case.data("iv")) == 12 and len(case.data("tag")) == 16 for case in AES_GCM)


@pytest.mark.parametrize("case", as_params(AES_GCM))
def test_aes_gcm_vector(case: WycheproofCase) -> None:
    aead = AESGCM(case.data("key"))
    iv, aad, msg = case.data("iv"), case.data("aad"), case.data("msg")
    sealed = case.data("ct") + case.data("tag")
    if case.result == "valid":
        assert aead.encrypt(iv, msg, aad) == sealed
        assert aead.decrypt(iv, sealed, aad) == msg
    else:
        with pytest.raises(InvalidTag):
            aead.decrypt(iv, sealed, aad)


@pytest.mark.parametrize("case", as_params(HKDF_SHA256))
def test_hkdf_sha256_vector(case: WycheproofCase) -> None:
    def derive() -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(),
            length=case.number("size"),
            salt=case.data("salt"),
            info=case.data("info"),
        ).derive(case.data("ikm"))

    if case.result == "valid":
        assert derive() == case.data("okm")
    else:
        # Every invalid HKDF case asks for more than 255 * 32 bytes.
        assert "SizeTooLarge" in case.flags
        with pytest.raises(ValueError, match="larger than"):
            derive()


@pytest.mark.parametrize("case", as_params(HMAC_SHA256))
def test_hmac_sha256_vector(case: WycheproofCase) -> None:
    tag_bytes = case.group["tagSize"] // 8
    computed = hmac.digest(case.data("key"), case.data("msg"), "sha256")[:tag_bytes]
    expected = case.data("tag")
    assert len(expected) == tag_bytes
    assert hmac.compare_digest(computed, expected) is (case.result == "valid")


@pytest.mark.parametrize("case", as_params(PBKDF2_SHA256))
def test_pbkdf2_hmac_sha256_vector(case: WycheproofCase) -> None:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=case.number("dkLen"),
        salt=case.data("salt"),
        iterations=case.number("iterationCount"),
    )
    if case.result == "valid":
        assert kdf.derive(case.data("password")) == case.data("dk")
    else:  # pragma: no cover - the pinned file has only valid PBKDF2 cases
        assert kdf.derive(case.data("password")) != case.data("dk")
