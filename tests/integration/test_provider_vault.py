"""The Vault provider: one contract suite, run on the in-repo fake and, with VAULT_ADDR, real Vault.

The fake (tests/support/vault_fake.py) is the CI run. To run the same contract
against a real Vault or OpenBao (docs/providers.md)::

    vault server -dev -dev-root-token-id=root &
    export VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root
    vault secrets enable transit
    .venv/bin/pytest tests/integration/test_provider_vault.py

Fault injection (sealed, permission denied, throttling) runs against the fake only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from encmigrate import KeyConfigError, KeyProviderError, get_cipher
from encmigrate.config import VaultSettings
from encmigrate.keys import KeyManager
from encmigrate.keys.remote import KeyringCache, RetryPolicy
from encmigrate.keys.resolve import resolve_key_setup
from encmigrate.keys.vault import VaultAuth, VaultProvider
from support.vault_fake import ROOT, VaultFake, load_policy

FAST = RetryPolicy(attempts=3, initial_wait=0.0, max_wait=0.0)
POLICIES = Path(__file__).resolve().parents[2] / "docs" / "policies" / "vault"


@dataclass
class Backend:
    url: str
    token: str
    fake: VaultFake | None

    def provider(self, path: str, token: str | None = None, **options: Any) -> VaultProvider:
        options.setdefault("cache_ttl", 0)
        options.setdefault("retry", FAST)
        return VaultProvider(self.url, VaultAuth(token or self.token), path=path, **options)


@pytest.fixture(scope="module", params=["fake", "real"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "real":
        if not os.environ.get("VAULT_ADDR"):
            pytest.skip("VAULT_ADDR is not set: the contract ran against the in-repo fake only")
        yield Backend(os.environ["VAULT_ADDR"], os.environ.get("VAULT_TOKEN", ""), None)
        return
    with VaultFake() as fake:
        yield Backend(fake.url, fake.add_token([ROOT]), fake)


@pytest.fixture
def fake(backend: Backend) -> VaultFake:
    if backend.fake is None:
        pytest.skip("fault injection needs the fake")
    return backend.fake


@pytest.fixture
def path() -> str:
    return f"encmigrate-test/{uuid.uuid4().hex}"


# -- the contract (fake and real) ------------------------------------------------------------


def test_generate_rotate_and_read_back(backend: Backend, path: str) -> None:
    provider = backend.provider(path)
    keyring = KeyManager(provider).generate()
    sealed = get_cipher("t.c", keyring=keyring).encrypt("before rotation")
    assert KeyManager(provider).rotate() == 2
    loaded = backend.provider(path).load()
    assert loaded.current == 2
    assert get_cipher("t.c", keyring=loaded).decrypt(sealed) == "before rotation"


def test_missing_path_says_how_to_create_a_keyring(backend: Backend, path: str) -> None:
    provider = backend.provider(path)
    assert not provider.exists()
    with pytest.raises(KeyConfigError, match="no keyring at Vault") as info:
        provider.load()
    assert "encmigrate keys generate" in str(info.value)


def test_generate_refuses_to_replace_an_existing_keyring(backend: Backend, path: str) -> None:
    KeyManager(backend.provider(path)).generate()
    with pytest.raises(Exception, match="already holds a keyring"):
        KeyManager(backend.provider(path)).generate()


def test_concurrent_rotations_are_refused_by_check_and_set_and_lose_nothing(
    backend: Backend, path: str
) -> None:
    KeyManager(backend.provider(path)).generate()
    slow = backend.provider(path)
    with slow.lock():
        stale = slow.load()
        assert KeyManager(backend.provider(path)).rotate() == 2
        with pytest.raises(KeyProviderError, match="changed since it was read"):
            slow.save(stale.rotated())
    assert backend.provider(path).load().current == 2


def test_recover_previous_returns_the_keyring_before_the_last_operation(
    backend: Backend, path: str
) -> None:
    provider = backend.provider(path)
    KeyManager(provider).generate()
    KeyManager(provider).rotate()
    assert provider.recover_previous().current == 1


def test_destroy_also_destroys_older_kv_versions_holding_the_material(
    backend: Backend, path: str
) -> None:
    provider = backend.provider(path)
    KeyManager(provider).generate()
    KeyManager(provider).rotate()
    KeyManager(provider).destroy(1, confirm=True, force=True)
    assert provider.load().get(1).key is None
    with pytest.raises(KeyConfigError):
        provider.recover_previous()  # version 2 of the secret held key 1: destroyed


def test_transit_stores_no_plaintext_key_and_unwraps_in_memory(backend: Backend, path: str) -> None:
    transit = f"encmigrate-{uuid.uuid4().hex[:8]}"
    provider = backend.provider(path, transit_key=transit)
    keyring = KeyManager(provider).generate()
    KeyManager(provider).rotate()
    plain = backend.provider(path)  # the same secret, read without unwrapping
    stored, _ = plain._read()
    document = json.loads(stored)
    assert document["wrapping"] == f"vault-transit:transit/{transit}"
    assert keyring.get(1).key is not None and keyring.get(1).key.to_base64() not in stored
    assert all(v["key"].startswith("vault:v") for v in document["keyring"]["versions"])
    loaded = backend.provider(path, transit_key=transit).load()
    assert loaded.master_key(1) == keyring.master_key(1) and loaded.current == 2


def _overwrite(backend: Backend, path: str, text: str) -> None:
    """Write the secret as someone with KV write rights but no Transit rights could."""
    import hvac  # type: ignore[import-untyped]

    client = hvac.Client(url=backend.url, token=backend.token)
    client.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"keyring": text}, mount_point="secret"
    )


def _transit_keyring_with_version_1_disabled(backend: Backend, path: str) -> VaultProvider:
    transit = f"encmigrate-{uuid.uuid4().hex[:8]}"
    provider = backend.provider(path, transit_key=transit)
    manager = KeyManager(provider)
    manager.generate()
    manager.rotate()
    manager.disable(1, reason="leaked")
    return provider


def _revive_version_1(ring: dict[str, Any]) -> None:
    ring["current"] = 1
    ring["versions"][0]["state"] = "active"
    ring["versions"][1]["state"] = "retired"


def _add_version(ring: dict[str, Any]) -> None:
    ring["versions"].append({**ring["versions"][1], "version": 3, "state": "retired"})


EDITS = {
    "disabled version made active and current": _revive_version_1,
    "state": lambda ring: ring["versions"][0].update(state="retired"),
    "current": lambda ring: ring.update(current=1),
    "add a version": _add_version,
    "remove a version": lambda ring: ring["versions"].pop(0),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_transit_editing_the_stored_keyring_without_transit_is_refused(
    backend: Backend, path: str, edit: str
) -> None:
    provider = _transit_keyring_with_version_1_disabled(backend, path)
    stored, _ = backend.provider(path)._read()
    document = json.loads(stored)
    EDITS[edit](document["keyring"])
    _overwrite(backend, path, json.dumps(document, indent=2))
    with pytest.raises(KeyConfigError, match="the stored keyring does not authenticate") as info:
        provider.load()
    assert info.value.exit_code == 3


def test_transit_document_of_an_older_encmigrate_is_refused_until_keys_upgrade(
    backend: Backend, path: str
) -> None:
    provider = _transit_keyring_with_version_1_disabled(backend, path)
    stored, _ = backend.provider(path)._read()
    document = json.loads(stored)
    del document["mac"], document["data_key"]  # what the previous version wrote
    _overwrite(backend, path, json.dumps(document, indent=2))
    with pytest.raises(KeyConfigError, match=r"not authenticated.*encmigrate keys upgrade"):
        provider.load()
    upgraded = KeyManager(provider).upgrade()
    assert [v.state.value for v in upgraded.versions] == ["disabled", "active"]
    assert provider.load().current == 2


# -- the fake only: faults, roles, credentials ------------------------------------------------


def test_sealed_vault_is_a_clear_error_and_is_not_retried(fake: VaultFake, path: str) -> None:
    backend = Backend(fake.url, fake.add_token([ROOT]), fake)
    KeyManager(backend.provider(path)).generate()
    fake.sealed = True
    try:
        before = len(fake.requests)
        with pytest.raises(KeyProviderError, match="is sealed: unseal it"):
            backend.provider(path).load()
        assert len(fake.requests) - before == 1
    finally:
        fake.sealed = False


@pytest.mark.parametrize("status", [429, 500, 502])
def test_throttling_and_server_errors_are_retried(fake: VaultFake, path: str, status: int) -> None:
    backend = Backend(fake.url, fake.add_token([ROOT]), fake)
    KeyManager(backend.provider(path)).generate()
    fake.fail_next(status, 2)
    assert backend.provider(path).load().current == 1


def test_errors_that_persist_end_in_a_clear_message(fake: VaultFake, path: str) -> None:
    backend = Backend(fake.url, fake.add_token([ROOT]), fake)
    KeyManager(backend.provider(path)).generate()
    fake.fail_next(500, 3)
    with pytest.raises(KeyProviderError, match="after 3 attempt"):
        backend.provider(path).load()


def test_unreachable_vault_is_a_provider_error(path: str) -> None:
    provider = VaultProvider("http://127.0.0.1:9", VaultAuth("t"), path=path, retry=FAST)
    with pytest.raises(KeyProviderError, match="cannot reach Vault"):
        provider.load()


def _policy(role: str, transit_key: str = "encmigrate") -> dict[str, set[str]]:
    return load_policy(
        POLICIES / f"{role}.hcl",
        mount="secret",
        path="encmigrate-test/*",
        transit_mount="transit",
        transit_key=transit_key,
        backup_mount="secret",
        backup_path="backups",
    )


def test_application_policy_reads_the_keyring_with_read_requests_only(
    fake: VaultFake, path: str
) -> None:
    admin = fake.add_token([_policy("key-administrator")])
    Backend(fake.url, admin, fake).provider(path, transit_key="encmigrate").exists()
    KeyManager(Backend(fake.url, admin, fake).provider(path, transit_key="encmigrate")).generate()
    app = fake.add_token([_policy("application")])
    before = len(fake.requests)
    keyring = Backend(fake.url, app, fake).provider(path, transit_key="encmigrate").load()
    assert keyring.current == 1
    made = [(method, route.split("/")[3]) for method, route, _ in fake.requests[before:]]
    # The document's data key, then the one master key: decrypt only, never a write.
    assert made == [("GET", "data"), ("POST", "decrypt"), ("POST", "decrypt")]


def test_admin_commands_with_the_application_policy_need_the_key_administrator_role(
    fake: VaultFake, path: str
) -> None:
    KeyManager(Backend(fake.url, fake.add_token([ROOT]), fake).provider(path)).generate()
    app = fake.add_token([_policy("application")])
    with pytest.raises(KeyProviderError) as info:
        KeyManager(Backend(fake.url, app, fake).provider(path)).rotate()
    assert "permission denied: needs the key-administrator role" in str(info.value)


def test_backup_and_audit_policies_cannot_read_key_material(fake: VaultFake, path: str) -> None:
    KeyManager(Backend(fake.url, fake.add_token([ROOT]), fake).provider(path)).generate()
    for role in ("backup", "audit"):
        token = fake.add_token([_policy(role)])
        with pytest.raises(KeyProviderError, match="permission denied"):
            Backend(fake.url, token, fake).provider(path).load()


def test_approle_login_from_the_environment(fake: VaultFake, path: str) -> None:
    KeyManager(Backend(fake.url, fake.add_token([ROOT]), fake).provider(path)).generate()
    fake.add_approle("role-1", "secret-1", [_policy("application")])
    env = {
        "VAULT_ADDR": fake.url,
        "VAULT_ROLE_ID": "role-1",
        "VAULT_SECRET_ID": "secret-1",
        "ENCMIGRATE_VAULT_PATH": path,
    }
    provider = VaultProvider.from_settings(VaultSettings(), env)
    assert provider.load().current == 1
    assert fake.requests[-2][1] == "/v1/auth/approle/login"


def test_namespace_is_sent_as_the_vault_namespace_header(fake: VaultFake, path: str) -> None:
    provider = Backend(fake.url, fake.add_token([ROOT]), fake).provider(path, namespace="team-a")
    provider.exists()
    assert fake.namespaces[-1] == "team-a"


def test_credentials_never_appear_in_repr_errors_or_logs(
    fake: VaultFake, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake.add_token([_policy("application")])
    provider = Backend(fake.url, token, fake).provider(path)
    texts = [repr(provider), provider.describe(), repr(provider.auth)]
    for attempt in (provider.load, KeyManager(provider).rotate):
        with pytest.raises(KeyConfigError) as info:
            attempt()
        texts.append(str(info.value))
    approle = VaultAuth(role_id="r", secret_id="secret-id-canary")
    texts += [repr(approle), f"{approle.secret_id}", str(approle.secret_id)]
    texts.append(caplog.text)
    assert all(token not in text and "secret-id-canary" not in text for text in texts)


def test_the_cache_serves_within_the_ttl_and_key_operations_read_fresh(
    fake: VaultFake, path: str
) -> None:
    backend = Backend(fake.url, fake.add_token([ROOT]), fake)
    KeyManager(backend.provider(path)).generate()
    now = [0.0]
    provider = backend.provider(path)
    provider.cache = KeyringCache(60, clock=lambda: now[0])
    reads = lambda: sum(1 for m, r, _ in fake.requests if m == "GET" and path in r)  # noqa: E731
    before = reads()
    first = provider.load()
    assert provider.load() is first and reads() - before == 1
    KeyManager(provider).rotate()  # reads fresh inside its lock, then caches what it wrote
    assert provider.load().current == 2
    now[0] = 61.0
    provider.load()
    assert reads() - before == 3


def test_plan_and_environment_configure_the_vault_provider(tmp_path: Path) -> None:
    plan = tmp_path / "encmigrate.toml"
    plan.write_text(
        '[keys]\nprovider = "vault"\n'
        '[keys.vault]\nurl = "https://vault.example:8200"\nmount = "kv"\npath = "app/keyring"\n'
        'transit_key = "encmigrate"\n'
    )
    setup = resolve_key_setup(plan, environ={"VAULT_TOKEN": "t"})
    assert isinstance(setup.provider, VaultProvider)
    assert (setup.provider.url, setup.provider.mount, setup.provider.path) == (
        "https://vault.example:8200",
        "kv",
        "app/keyring",
    )
    assert setup.provider.transit_key == "encmigrate"
    env = {"VAULT_TOKEN": "t", "VAULT_ADDR": "http://127.0.0.1:1", "ENCMIGRATE_VAULT_PATH": "x"}
    overridden = resolve_key_setup(plan, environ=env).provider
    assert isinstance(overridden, VaultProvider)
    assert (overridden.url, overridden.path) == ("http://127.0.0.1:1", "x")
    with pytest.raises(KeyConfigError, match="VAULT_TOKEN, or VAULT_ROLE_ID"):
        resolve_key_setup(plan, environ={})


def test_shipped_vault_policies_are_least_privilege() -> None:
    assert {p.stem for p in POLICIES.glob("*.hcl")} == {
        "key-administrator",
        "application",
        "backup",
        "audit",
    }
    application = _policy("application")
    assert application == {
        "secret/data/encmigrate-test/*": {"read"},
        "transit/decrypt/encmigrate": {"update"},
    }
    assert _policy("backup") == {"secret/data/backups/*": {"create"}}
    audit = _policy("audit")
    assert not any(glob.startswith("secret/data/") for glob in audit)
    admin = _policy("key-administrator")
    assert admin["secret/data/encmigrate-test/*"] == {"create", "read", "update"}
    assert admin["secret/destroy/encmigrate-test/*"] == {"update"}


def test_without_hvac_the_error_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setitem(sys.modules, "hvac", None)
    with pytest.raises(KeyConfigError, match=r"pip install 'encmigrate\[vault\]'"):
        VaultProvider("http://127.0.0.1:9", VaultAuth("t"), path=path).load()
