"""Settings: documented defaults, validation that names the variable, runtime folders."""

from __future__ import annotations

import os
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from vfe.setting_rows import Setting, parse
from vfe.settings import SETTINGS, Settings, SettingsError, setting_names

DOCUMENTED = {
    "REDIS_HOST": "localhost",
    "REDIS_PORT": "6379",
    "REDIS_DB": "0",
    "DATABASE_PATH": "runtime/db/metadata.db",
    "FRAMES_BASE_PATH": "runtime/frames",
    "MAX_CONCURRENT_JOBS": "5",
    "CACHE_TTL": "3600",
    "MAX_CACHE_SIZE_MB": "100",
    "VIDEOS_BASE_PATH": "runtime/videos",
    "UPLOADS_PATH": "runtime/uploads",
    "MAX_UPLOAD_MB": "2048",
    "LOG_PATH": "runtime/logs/app.log",
    "HOST": "127.0.0.1",
    "PORT": "8000",
}


def test_table_defaults_are_the_documented_ones() -> None:
    table = {s.name: s.default for s in SETTINGS}
    for name, default in DOCUMENTED.items():
        assert table[name] == default, name
    assert all(s.help.strip() for s in SETTINGS)
    assert len(setting_names()) == len(set(setting_names())) == len(SETTINGS)


def test_defaults_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert (s.redis_host, s.redis_port, s.redis_db) == ("localhost", 6379, 0)
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.max_concurrent_jobs == 5
    assert s.cache_ttl == 3600 and isinstance(s.cache_ttl, int)
    assert s.max_cache_size_mb == 100.0
    assert s.max_upload_mb == 2048.0
    assert s.log_level == "INFO"
    assert s.database_path == tmp_path.resolve() / "runtime" / "db" / "metadata.db"
    assert s.frames_base_path == tmp_path.resolve() / "runtime" / "frames"
    assert s.videos_base_path == tmp_path.resolve() / "runtime" / "videos"
    assert s.uploads_path == tmp_path.resolve() / "runtime" / "uploads"
    assert s.log_path == tmp_path.resolve() / "runtime" / "logs" / "app.log"
    assert s.max_upload_bytes == 2048 * 1024 * 1024
    assert s.max_cache_bytes == 100 * 1024 * 1024
    assert not (tmp_path / "runtime").exists()  # reading settings creates nothing


def test_the_table_is_derived_from_the_fields() -> None:
    assert [name.upper() for name in Settings.model_fields] == setting_names()
    port = next(s for s in SETTINGS if s.name == "PORT")
    assert (port.kind, port.minimum, port.maximum) == ("int", 1, 65535)
    level = next(s for s in SETTINGS if s.name == "LOG_LEVEL")
    assert level.choices == ("DEBUG", "INFO", "WARNING", "ERROR")
    assert level.help == "DEBUG, INFO, WARNING or ERROR."


def test_every_default_reads_back_as_the_declared_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    read = Settings.from_env({})
    for name, field in Settings.model_fields.items():
        expected = field.default
        if isinstance(expected, Path):
            expected = tmp_path.resolve() / expected
        assert getattr(read, name) == expected, name
        assert type(getattr(read, name)) is type(field.default), name


def test_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("FRAMES_BASE_PATH", str(tmp_path / "f"))
    s = Settings.from_env()
    assert s.port == 9123
    assert s.frames_base_path == tmp_path / "f"


def test_values_are_trimmed_and_converted(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "PORT": " 8080 ",
            "REDIS_HOST": "  cache.internal ",
            "MAX_CACHE_SIZE_MB": "0.5",
            "MAX_UPLOAD_MB": "1.5",
            "LOG_LEVEL": " debug ",
            "DATABASE_PATH": f"  {tmp_path}/x/../meta.db  ",
        }
    )
    assert s.port == 8080
    assert s.redis_host == "cache.internal"
    assert s.max_cache_bytes == 512 * 1024
    assert s.max_upload_bytes == int(1.5 * 1024 * 1024)
    assert s.log_level == "DEBUG"
    assert s.database_path == tmp_path.resolve() / "meta.db"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.from_env({"UPLOADS_PATH": "~/ups"})
    assert s.uploads_path == tmp_path.resolve() / "ups"


@pytest.mark.parametrize("level", ["DEBUG", "info", "Warning", "ERROR"])
def test_log_levels_accepted(level: str) -> None:
    assert Settings.from_env({"LOG_LEVEL": level}).log_level == level.upper()


def test_bounds_are_inclusive() -> None:
    s = Settings.from_env({"PORT": "65535", "REDIS_DB": "0", "MAX_CONCURRENT_JOBS": "256"})
    assert (s.port, s.redis_db, s.max_concurrent_jobs) == (65535, 0, 256)
    assert Settings.from_env({"PORT": "1"}).port == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", ""),
        ("PORT", "80.5"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("REDIS_PORT", "nan"),
        ("REDIS_DB", "-1"),
        ("REDIS_DB", "1025"),
        ("REDIS_RETRY_SECONDS", "0.01"),
        ("REDIS_RETRY_SECONDS", "nan"),
        ("MAX_CONCURRENT_JOBS", "0"),
        ("MAX_CONCURRENT_JOBS", "five"),
        ("MAX_QUEUE_SIZE", "0"),
        ("JOB_TIMEOUT_SECONDS", "inf"),
        ("JOB_TIMEOUT_SECONDS", "-inf"),
        ("CACHE_TTL", "0"),
        ("CACHE_TTL", "1e3"),
        ("MAX_CACHE_SIZE_MB", "NaN"),
        ("MAX_CACHE_SIZE_MB", "0"),
        ("MAX_UPLOAD_MB", "Infinity"),
        ("MAX_UPLOAD_MB", "-5"),
        ("SSE_HEARTBEAT_SECONDS", "601"),
        ("DATABASE_PATH", ""),
        ("FRAMES_BASE_PATH", "   "),
        ("VIDEOS_BASE_PATH", ""),
        ("UPLOADS_PATH", "\t"),
        ("LOG_PATH", ""),
        ("HOST", ""),
        ("REDIS_HOST", "  "),
        ("LOG_LEVEL", "verbose"),
        ("LOG_LEVEL", "warn"),
        ("LOG_LEVEL", ""),
        ("ALLOW_PRIVATE_URLS", "10.0.0.0/33"),
        ("ALLOW_PRIVATE_URLS", "intranet"),
        ("ALLOW_URL_SOURCES", "sometimes"),
        ("MAX_FRAMES_PER_JOB", "0"),
        ("MAX_FRAME_PIXELS", "1.5"),
        ("MAX_BODY_KB", "0"),
        ("WEBHOOK_URL", "ftp://example.com/"),
        ("WEBHOOK_URL", "http://"),
        ("WEBHOOK_URL", "https://user:secret@example.com/hook"),
        ("WEBHOOK_SECRET", "whsec_not base64!"),
        ("WEBHOOK_MAX_ATTEMPTS", "0"),
    ],
)
def test_bad_value_raises_settings_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value})
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_error_message_shows_the_bad_value() -> None:
    with pytest.raises(SettingsError, match=r"PORT must be at most 65535, got '70000'"):
        Settings.from_env({"PORT": "70000"})
    with pytest.raises(SettingsError, match=r"MAX_CONCURRENT_JOBS must be at least 1"):
        Settings.from_env({"MAX_CONCURRENT_JOBS": "0"})
    with pytest.raises(SettingsError, match=r"MAX_UPLOAD_MB must be a finite number"):
        Settings.from_env({"MAX_UPLOAD_MB": "inf"})
    with pytest.raises(SettingsError, match=r"CACHE_TTL must be a number \(int\), got '1e3'"):
        Settings.from_env({"CACHE_TTL": "1e3"})
    with pytest.raises(
        SettingsError, match=r"^LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'warn'$"
    ):
        Settings.from_env({"LOG_LEVEL": "warn"})
    with pytest.raises(SettingsError, match=r"^ALLOW_PRIVATE_URLS: 'intranet' is not a network"):
        Settings.from_env({"ALLOW_PRIVATE_URLS": "intranet"})


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env({"PORT": "9000", "HOST": "0.0.0.0"}, port=9001)
    assert (s.host, s.port) == ("0.0.0.0", 9001)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [({"port": 70000}, "PORT"), ({"max_concurrent_jobs": 0}, "MAX_CONCURRENT_JOBS")],
)
def test_overrides_are_checked_against_the_same_fields(
    overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({}, **overrides)


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError, match="PROT"):
        Settings.from_env({}, prot=9001)


def test_settings_are_immutable() -> None:
    s = Settings.from_env({})
    with pytest.raises(ValidationError, match="frozen"):
        s.port = 1  # type: ignore[misc]
    assert hash(s) == hash(Settings.from_env({}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("1", True), ("TRUE", True), (" yes ", True), ("on", True)],
        *[("0", False), ("false", False), ("No", False), ("off", False), ("", False)],
    ],
)
def test_bool_kind(raw: str, expected: bool) -> None:
    assert parse(Setting("FLAG", "0", "bool", "a flag"), raw) is expected


def test_api_keys_are_split_and_never_shown() -> None:
    settings = Settings.from_env({"API_KEYS": " one-key , two-key ,, "})
    assert settings.keys == ("one-key", "two-key")
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "one-key" not in shown
    assert "api_keys=SecretStr('**********')" in repr(settings)
    assert Settings.from_env({}).keys == ()


def test_allow_private_urls_takes_true_false_or_networks() -> None:
    def policy(raw: str) -> Any:
        return Settings.from_env({"ALLOW_PRIVATE_URLS": raw}).allow_private_urls

    loopback, private = ip_address("127.0.0.1"), ip_address("10.1.2.3")
    assert not policy("false").permits(loopback)
    assert policy("true").permits(loopback) and policy("true").permits(private)
    allowed = policy("10.1.0.0/16, 192.168.5.7")
    assert allowed.permits(private) and not allowed.permits(loopback)
    assert allowed.permits(ip_address("192.168.5.7"))
    assert not allowed.permits(ip_address("192.168.5.8"))
    for raw in ("false", "true", "10.1.0.0/16, 192.168.5.7"):  # str() spells it back
        assert policy(str(policy(raw))) == policy(raw)


def test_bool_kind_rejects_other_words() -> None:
    with pytest.raises(SettingsError, match="FLAG must be true or false"):
        parse(Setting("FLAG", "0", "bool", "a flag"), "maybe")


def test_ensure_dirs_creates_every_folder_whatever_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    s = Settings.from_env({})  # relative defaults resolve against the start-up cwd
    monkeypatch.chdir(elsewhere)
    s.ensure_dirs()
    for folder in s.runtime_dirs():
        assert folder.is_dir()
        assert folder.is_relative_to(start)
    assert (start / "runtime" / "db").is_dir()
    assert (start / "runtime" / "logs").is_dir()
    assert not s.log_path.exists() and not s.database_path.exists()  # folders only
    assert list(elsewhere.iterdir()) == []
    s.ensure_dirs()  # idempotent


def test_ensure_dirs_uncreatable_folder_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    s = Settings.from_env({"FRAMES_BASE_PATH": str(blocker / "frames")})
    with pytest.raises(SettingsError, match="cannot create folder") as info:
        s.ensure_dirs()
    assert str(blocker / "frames") in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_ensure_dirs_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    s = Settings.from_env({"UPLOADS_PATH": str(locked / "uploads")})
    with pytest.raises(SettingsError, match="Permission denied"):
        s.ensure_dirs()
