"""Environment and file providers, and the order in which the default keyring is looked up."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from encmigrate import ConfigError, DecryptionError, KeyConfigError, KeyProviderError, get_cipher
from encmigrate.keys import EnvProvider, FileProvider, Keyring, KeyState, resolve_key_setup
from encmigrate.keys.resolve import default_keyring, holds_default_keyring, reset_default_keyring

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def test_env_master_key_with_version() -> None:
    keyring = EnvProvider(
        environ={"ENCMIGRATE_MASTER_KEY": KEY_B64, "ENCMIGRATE_KEY_VERSION": "3"}
    ).load()
    assert keyring.current == 3 and keyring.master_key(3) == KEY


def test_env_accepts_fernet_style_urlsafe_key_and_custom_prefix() -> None:
    env = {"ALPHAPULSE_ENCRYPTION_MASTER_KEY": base64.urlsafe_b64encode(KEY).decode()}
    keyring = EnvProvider("ALPHAPULSE_ENCRYPTION_", env).load()
    assert keyring.master_key(1) == KEY


def test_env_keyring_document_wins_over_master_key() -> None:
    document = Keyring.generate().rotated()
    env = {"ENCMIGRATE_KEYRING": document.to_json(), "ENCMIGRATE_MASTER_KEY": KEY_B64}
    assert EnvProvider(environ=env).load().current == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set ENCMIGRATE_KEYRING or ENCMIGRATE_MASTER_KEY"),
        ({"ENCMIGRATE_MASTER_KEY": "abc"}, "ENCMIGRATE_MASTER_KEY: master key must decode to 32"),
        ({"ENCMIGRATE_MASTER_KEY": KEY_B64, "ENCMIGRATE_KEY_VERSION": "two"}, "KEY_VERSION"),
        ({"ENCMIGRATE_MASTER_KEY": KEY_B64, "ENCMIGRATE_KEY_VERSION": "0"}, "from 1 to"),
        ({"ENCMIGRATE_KEYRING": "{"}, "ENCMIGRATE_KEYRING: not valid JSON"),
    ],
)
def test_env_problems_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(KeyConfigError, match=message):
        EnvProvider(environ=env).load()


@pytest.mark.parametrize("raw", ["99999999999", "4294967296", "-3", "two", "1e3", "9" * 5000])
def test_key_version_out_of_range_is_one_line_naming_the_variable_not_the_value(raw: str) -> None:
    env = {"ENCMIGRATE_MASTER_KEY": KEY_B64, "ENCMIGRATE_KEY_VERSION": raw}
    with pytest.raises(KeyConfigError) as caught:
        EnvProvider(environ=env).load()
    text = str(caught.value)
    assert text.startswith("ENCMIGRATE_KEY_VERSION: must be a whole number from 1 to 4294967295")
    assert "\n" not in text and raw not in text


def test_the_largest_key_version_the_envelope_holds_is_accepted() -> None:
    env = {"ENCMIGRATE_MASTER_KEY": KEY_B64, "ENCMIGRATE_KEY_VERSION": "4294967295"}
    assert EnvProvider(environ=env).load().current == 4294967295


def test_deeply_nested_keyring_json_is_a_one_line_key_error() -> None:
    env = {"ENCMIGRATE_KEYRING": "[" * 100_000 + "]" * 100_000}
    with pytest.raises(KeyConfigError) as caught:
        EnvProvider(environ=env).load()
    assert str(caught.value) == (
        "ENCMIGRATE_KEYRING: nested too deeply to be a keyring; "
        "expected an encmigrate-keyring/1 document"
    )


def test_env_provider_is_read_only() -> None:
    with pytest.raises(KeyProviderError, match="read-only"):
        EnvProvider(environ={}).save(Keyring.generate())


def test_file_provider_refuses_a_keyring_readable_by_others(tmp_path: Path) -> None:
    provider = FileProvider(tmp_path / "k.json")
    provider.save(Keyring.generate())
    os.chmod(provider.path, 0o644)
    with pytest.raises(KeyProviderError, match="chmod 600"):
        provider.load()
    os.chmod(provider.path, 0o600)
    assert provider.load().current == 1


def test_file_provider_writes_atomically_with_mode_0600(tmp_path: Path) -> None:
    provider = FileProvider(tmp_path / "sub" / "k.json")
    first = Keyring.generate()
    provider.save(first)
    provider.save(first.rotated())
    assert provider.path.stat().st_mode & 0o777 == 0o600
    assert provider.load().current == 2
    assert sorted(p.name for p in provider.path.parent.iterdir()) == ["k.json"]


def test_missing_keyring_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="encmigrate keys generate"):
        FileProvider(tmp_path / "none.json").load()


# -- lookup order -----------------------------------------------------------


def _plan(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "encmigrate.toml"
    path.write_text(body)
    return path


def test_lookup_order_env_keyring_then_master_key_then_file_then_plan(tmp_path: Path) -> None:
    _plan(tmp_path, '[keys]\nprovider = "file"\npath = "plan-keyring.json"\n')
    file_env = {"ENCMIGRATE_KEYRING_FILE": str(tmp_path / "env-file.json")}
    assert resolve_key_setup(environ={}, cwd=tmp_path).rule.endswith("keys.path")
    setup = resolve_key_setup(environ=file_env, cwd=tmp_path)
    assert setup.rule == "ENCMIGRATE_KEYRING_FILE"
    assert isinstance(setup.provider, FileProvider)
    assert setup.provider.path == tmp_path / "env-file.json"
    both = {**file_env, "ENCMIGRATE_MASTER_KEY": KEY_B64}
    assert resolve_key_setup(environ=both, cwd=tmp_path).rule == "ENCMIGRATE_MASTER_KEY"
    all_three = {**both, "ENCMIGRATE_KEYRING": Keyring.generate().to_json()}
    assert resolve_key_setup(environ=all_three, cwd=tmp_path).rule == "ENCMIGRATE_KEYRING"


def test_keyring_and_audit_log_default_beside_the_plan(tmp_path: Path) -> None:
    _plan(tmp_path, "[database]\nurl = 'sqlite://'\n")
    setup = resolve_key_setup(environ={}, cwd=tmp_path)
    assert isinstance(setup.provider, FileProvider)
    assert setup.provider.path == tmp_path / "keyring.json"
    assert setup.audit is not None and setup.audit.path == tmp_path / "encmigrate-audit.jsonl"


def test_plan_audit_log_setting_overrides_the_default(tmp_path: Path) -> None:
    _plan(tmp_path, '[keys]\naudit_log = "logs/audit.jsonl"\n')
    setup = resolve_key_setup(environ={}, cwd=tmp_path)
    assert setup.audit is not None and setup.audit.path == tmp_path / "logs" / "audit.jsonl"


def test_prefix_from_environment_or_plan_replaces_encmigrate(tmp_path: Path) -> None:
    env = {
        "ENCMIGRATE_ENV_PREFIX": "ALPHAPULSE_ENCRYPTION_",
        "ALPHAPULSE_ENCRYPTION_MASTER_KEY": KEY_B64,
        "ENCMIGRATE_MASTER_KEY": "ignored",
    }
    setup = resolve_key_setup(environ=env, cwd=tmp_path)
    assert setup.rule == "ALPHAPULSE_ENCRYPTION_MASTER_KEY"
    assert setup.provider.load().master_key(1) == KEY
    _plan(tmp_path, '[keys]\nprovider = "env"\nenv_prefix = "APP_"\n')
    setup = resolve_key_setup(environ={"APP_MASTER_KEY": KEY_B64}, cwd=tmp_path)
    assert setup.rule == "APP_MASTER_KEY"


def test_pyproject_tool_table_is_found(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.encmigrate.keys]\npath = "secrets/k.json"\n')
    setup = resolve_key_setup(environ={}, cwd=tmp_path)
    assert isinstance(setup.provider, FileProvider)
    assert setup.provider.path == tmp_path / "secrets" / "k.json"


def test_explicit_config_and_environment_config(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "custom.toml").write_text('[keys]\npath = "x.json"\n')
    setup = resolve_key_setup(other / "custom.toml", environ={}, cwd=tmp_path)
    assert isinstance(setup.provider, FileProvider) and setup.provider.path == other / "x.json"
    env = {"ENCMIGRATE_CONFIG": str(other / "custom.toml")}
    setup = resolve_key_setup(environ=env, cwd=tmp_path)
    assert isinstance(setup.provider, FileProvider) and setup.provider.path == other / "x.json"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_key_setup(tmp_path / "missing.toml", environ={}, cwd=tmp_path)


def test_nothing_configured_names_every_option(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError) as caught:
        resolve_key_setup(environ={}, cwd=tmp_path)
    for name in (
        "ENCMIGRATE_KEYRING",
        "ENCMIGRATE_MASTER_KEY",
        "ENCMIGRATE_KEYRING_FILE",
        "[keys]",
    ):
        assert name in str(caught.value)


def test_bad_keys_settings_are_reported_with_their_location(tmp_path: Path) -> None:
    _plan(tmp_path, '[keys]\nprovider = "floppy"\nrotation_days = 0\ntypo = 1\n')
    with pytest.raises(ConfigError) as caught:
        resolve_key_setup(environ={}, cwd=tmp_path)
    text = str(caught.value)
    assert "keys.provider" in text and "keys.rotation_days" in text and "keys.typo" in text


def test_default_keyring_reloads_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.json"
    provider = FileProvider(path)
    provider.save(Keyring.generate())
    monkeypatch.setenv("ENCMIGRATE_KEYRING_FILE", str(path))
    for name in ("ENCMIGRATE_KEYRING", "ENCMIGRATE_MASTER_KEY", "ENCMIGRATE_ENV_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    reset_default_keyring()
    first = default_keyring()
    assert default_keyring() is first
    blob = get_cipher("t.c").encrypt("x")
    provider.save(provider.load().rotated())
    assert default_keyring().current == 2
    assert get_cipher("t.c").decrypt(blob) == "x"
    reset_default_keyring()


def test_key_access_is_audited_once_per_load_and_per_derived_key(tmp_path: Path) -> None:
    from encmigrate.keys import load_keyring

    FileProvider(tmp_path / "keyring.json").save(Keyring.generate())
    _plan(tmp_path)
    setup = resolve_key_setup(environ={}, cwd=tmp_path)
    keyring = load_keyring(setup)
    cipher = get_cipher("customer.email", keyring=keyring)
    for value in ("a", "b", "c"):
        cipher.decrypt(cipher.encrypt(value))
    get_cipher("customer.phone", keyring=keyring).encrypt("x")
    assert setup.audit is not None
    events = [(e["action"], e.get("context")) for e in setup.audit.events()]
    assert events == [
        ("keyring.load", None),
        ("key.derive.data", "customer.email"),
        ("key.derive.data", "customer.phone"),
    ]


def _write_in_place(path: Path, text: str, size: int) -> None:
    """Rewrite ``path`` keeping its inode, size and mtime (coarse clocks, restores, rsync -t)."""
    info = path.stat()
    data = text.encode().ljust(size)
    assert len(data) == size
    with path.open("r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_default_keyring_looks_at_the_store_again_after_its_ttl(tmp_path: Path) -> None:
    """A disable made elsewhere is in force within ENCMIGRATE_KEYRING_TTL, even unseen by stat."""
    path = tmp_path / "k.json"
    keyring = Keyring.generate()
    blob = get_cipher("t.c", keyring=keyring).encrypt("under version 1")
    rotated = keyring.rotated()
    path.write_text(rotated.to_json().ljust(4096))
    path.chmod(0o600)
    env = {"ENCMIGRATE_KEYRING_FILE": str(path), "ENCMIGRATE_KEYRING_TTL": "5"}
    now = [100.0]
    reset_default_keyring()
    try:
        first = default_keyring(env, clock=lambda: now[0])
        assert get_cipher("t.c", keyring=first).decrypt(blob) == "under version 1"
        stamp = path.stat()
        _write_in_place(path, rotated.with_state(1, KeyState.DISABLED).to_json(), 4096)
        after = path.stat()
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            stamp.st_ino,
            stamp.st_size,
            stamp.st_mtime_ns,
        )
        now[0] += 4.9
        assert default_keyring(env, clock=lambda: now[0]) is first  # metadata unchanged
        now[0] += 0.2
        second = default_keyring(env, clock=lambda: now[0])
        assert second is not first and second.get(1).state is KeyState.DISABLED
        with pytest.raises(DecryptionError):
            get_cipher("t.c", keyring=second).decrypt(blob)
        assert holds_default_keyring(second) and not holds_default_keyring(first)
    finally:
        reset_default_keyring()


def test_default_keyring_keeps_the_same_object_while_the_store_is_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k.json"
    FileProvider(path).save(Keyring.generate())
    env = {"ENCMIGRATE_KEYRING_FILE": str(path), "ENCMIGRATE_KEYRING_TTL": "0"}
    reset_default_keyring()
    try:
        first = default_keyring(env)
        os.utime(path)  # metadata moves, content does not: keep the keyring and its derived keys
        assert default_keyring(env) is first
        lines = (tmp_path / "encmigrate-audit.jsonl").read_text().splitlines()
        assert [json.loads(line)["action"] for line in lines] == ["keyring.load"]
    finally:
        reset_default_keyring()


@pytest.mark.parametrize("ttl", ["soon", "-1", "nan", "inf"])
def test_a_bad_keyring_ttl_names_the_variable(tmp_path: Path, ttl: str) -> None:
    env = {"ENCMIGRATE_KEYRING_FILE": str(tmp_path / "k.json"), "ENCMIGRATE_KEYRING_TTL": ttl}
    with pytest.raises(KeyConfigError) as caught:
        default_keyring(env)
    assert str(caught.value) == "ENCMIGRATE_KEYRING_TTL: must be a number of seconds (0 or more)"


def test_default_keyring_follows_a_changed_master_key_variable() -> None:
    env = {"ENCMIGRATE_MASTER_KEY": KEY_B64, "ENCMIGRATE_KEY_VERSION": "1"}
    reset_default_keyring()
    try:
        first = default_keyring(env)
        assert default_keyring(env) is first
        env["ENCMIGRATE_KEY_VERSION"] = "2"
        assert default_keyring(env).current == 2
        other = bytes(range(100, 132))
        env["ENCMIGRATE_MASTER_KEY"] = base64.b64encode(other).decode()
        assert default_keyring(env).master_key(2) == other
    finally:
        reset_default_keyring()
