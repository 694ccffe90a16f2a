"""Settings: read from IE_* variables, derived defaults, and no placeholder secret in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.settings import DEVELOPMENT_SECRET, Settings, get_settings


def test_development_defaults_derive_from_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    assert settings.env == "development"
    assert settings.database_url == f"sqlite:///{tmp_path / 'd' / 'ie.db'}"
    assert settings.corpus_dir == tmp_path / "d" / "corpus"
    assert settings.uploads_dir == tmp_path / "d" / "uploads"
    assert settings.secret_key.get_secret_value() == DEVELOPMENT_SECRET
    assert (settings.max_upload_bytes, settings.max_file_bytes) == (2 * 1024**3, 50 * 1024**2)
    assert (settings.max_pixels, settings.max_files) == (40_000_000, 20_000)


def test_variables_with_the_ie_prefix_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    monkeypatch.setenv("IE_MAX_FILES", "12")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/test"
    assert settings.max_files == 12


def test_a_relative_data_folder_is_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(data_dir=Path("data")).data_dir == tmp_path / "data"


@pytest.mark.parametrize("secret", [None, DEVELOPMENT_SECRET, "", "   "])
def test_production_refuses_a_missing_or_default_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError, match="IE_SECRET_KEY must be set"):
        if secret is None:
            Settings(env="production")
        else:
            Settings(env="production", secret_key=SecretStr(secret))


@pytest.mark.parametrize("secret", [None, DEVELOPMENT_SECRET, "", "   "])
def test_production_refuses_a_missing_or_default_secret_even_with_a_token(
    secret: str | None,
) -> None:
    token = {"access_token": SecretStr("t" * 32)}
    with pytest.raises(ValidationError, match="IE_SECRET_KEY must be set"):
        if secret is None:
            Settings(env="production", **token)
        else:
            Settings(env="production", secret_key=SecretStr(secret), **token)


@pytest.mark.parametrize(("token", "why"), [(None, "missing"), ("", "missing"),
                                             ("   ", "missing"), ("short-token", "too short")])
def test_production_refuses_a_missing_or_short_access_token(token: str | None, why: str) -> None:
    secret = SecretStr("s3cr3t-" + "x" * 30)
    with pytest.raises(ValidationError, match=f"IE_ACCESS_TOKEN must be set.*{why}"):
        if token is None:
            Settings(env="production", secret_key=secret)
        else:
            Settings(env="production", secret_key=secret, access_token=SecretStr(token))


def test_production_from_the_environment_refuses_to_start_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IE_ENV", "production")
    with pytest.raises(ValidationError, match="IE_SECRET_KEY must be set"):
        Settings()
    monkeypatch.setenv("IE_SECRET_KEY", "s3cr3t-" + "x" * 30)
    with pytest.raises(ValidationError, match="IE_ACCESS_TOKEN must be set"):
        Settings()
    monkeypatch.setenv("IE_ACCESS_TOKEN", "  " + "t" * 20 + "\n")
    settings = Settings()
    assert settings.access_token is not None
    assert settings.access_token.get_secret_value() == "t" * 20


def test_production_accepts_a_real_secret_and_token() -> None:
    settings = Settings(env="production", secret_key=SecretStr("s3cr3t-" + "x" * 30),
                        access_token=SecretStr("t" * 24))
    assert settings.env == "production"


def test_a_short_token_is_refused_in_development_too() -> None:
    with pytest.raises(ValidationError, match="IE_ACCESS_TOKEN is too short"):
        Settings(access_token=SecretStr("1234"))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        Settings(max_file_bytes=0)


def test_get_settings_reads_once() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
