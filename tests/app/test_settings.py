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


def test_production_accepts_a_real_secret() -> None:
    settings = Settings(env="production", secret_key=SecretStr("s3cr3t-" + "x" * 30))
    assert settings.env == "production"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        Settings(max_file_bytes=0)


def test_get_settings_reads_once() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
