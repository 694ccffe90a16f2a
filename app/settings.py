"""The web application's and the worker's settings: one object, read once.

Every knob is an environment variable with the prefix ``IE_`` (``IE_DATA_DIR``,
``IE_DATABASE_URL``, ...). This is the only place in ``app/`` that reads the environment; code
receives a :class:`Settings` object (``get_settings()`` in production, one built by hand in tests).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET: Final = "development-only-secret-do-not-use-in-production"
"""The secret key used when none is given; refused when ``env`` is ``production``."""
MIN_TOKEN_LENGTH: Final = 16
"""The shortest access token accepted (``IE_ACCESS_TOKEN``)."""


class Settings(BaseSettings):
    """Where data lives, how to reach the database and the broker, and the upload limits."""

    model_config = SettingsConfigDict(env_prefix="IE_", extra="ignore")

    env: Literal["development", "production"] = Field(
        default="development",
        description="``production`` refuses placeholder secrets; ``development`` allows them.",
    )
    data_dir: Path = Field(
        default=Path("data"),
        description="Folder of everything the app writes: the SQLite database (by default), "
        "uploads (``uploads/{id}/``) and run folders. Made absolute when read, so a later "
        "change of working directory changes nothing.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the store. Empty = ``sqlite:///{data_dir}/ie.db``. "
        "PostgreSQL: ``postgresql+psycopg://user@host/db``.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL. None = the embedded broker (kombu's filesystem "
        "transport under ``data_dir``), good for one machine; Redis for several.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL for live-update pub/sub. None = the event stream polls the "
        "database instead.",
    )
    sse_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Without Redis: how often an open event stream looks for new events.",
    )
    sse_fallback_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="With Redis: how often an event stream looks anyway, so a lost "
        "notification delays an update by at most this long.",
    )
    sse_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="An idle event stream sends a comment line this often, so proxies keep "
        "it open and a vanished browser is noticed.",
    )
    sse_holdback_seconds: float = Field(
        default=2.0,
        ge=0,
        description="PostgreSQL only: how long an event stream waits for an event id that is "
        "missing below newer ones (its transaction may still commit) before passing it by. "
        "SQLite has one writer at a time, so its ids always appear in order.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_SECRET),
        description="Key for signing cookies and tokens. Must be set (and not the development "
        "default) when ``env`` is ``production``.",
    )
    access_token: SecretStr | None = Field(
        default=None,
        description="The one access token that opens the app: typed on the login page (which "
        "then sets a signed session cookie) or sent as ``Authorization: Bearer <token>`` by "
        "scripts. At least 16 characters. None in development = a random token kept in "
        "``{data_dir}/access-token`` (``python -m app.access`` prints it); required in "
        "production.",
    )
    session_hours: float = Field(
        default=14 * 24,
        gt=0,
        description="How long a login lasts; changing the access token or the secret key ends "
        "every session at once.",
    )
    cookie_secure: bool | None = Field(
        default=None,
        description="Mark the session cookie ``Secure`` (sent over HTTPS only). None = when "
        "the request itself came over HTTPS (behind a TLS proxy, start uvicorn with "
        "``--proxy-headers`` or set this to true).",
    )
    corpus_dir: Path | None = Field(
        default=None,
        description="Folder of the offline image corpus the explorer searches. None = "
        "``{data_dir}/corpus``.",
    )
    search_url: str = Field(
        default="http://127.0.0.1:8765",
        description="The offline web's search service (``ie corpus serve``) that workers query. "
        "Its host is the one private address the downloader may fetch from.",
    )
    engine_config: Path | None = Field(
        default=None,
        description="Web engine configuration file (TOML or JSON, the format of ``ie explore "
        "--engine-config``). Its engines are offered on the launch form; None = the offline "
        "web only. API keys stay in the worker's environment, named by the file.",
    )
    broker_visibility_timeout: int = Field(
        default=6 * 3600,
        gt=0,
        description="Seconds a Redis broker waits for a late acknowledgement before it hands a "
        "task to another worker; longer than the longest task (a GPU iteration).",
    )
    broker_key_prefix: str = Field(
        default="",
        description="Prefix of every key the Redis broker writes (several set-ups, or tests, "
        "can share one Redis server).",
    )
    vocabulary_max_concepts: int | None = Field(
        default=None,
        gt=0,
        description="Cap on a run's vocabulary when its configuration sets none: the worker "
        "spreads this many concepts over WordNet (quick trials, tests). None = the whole "
        "vocabulary of the preset.",
    )
    max_train_steps: int | None = Field(
        default=None,
        gt=0,
        description="Cap on a run's training steps per iteration, applied by the worker (quick "
        "trials, tests, a slow machine). None = the run's own configuration.",
    )
    progress_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Worker: at most one progress write (and ``phase`` event) per phase this "
        "often; a phase's start and end are always written.",
    )
    stop_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Worker: how often a running task reads the run's status to notice a "
        "cancel (a training loop stops within about this long).",
    )
    disk_reserve_mb: int = Field(
        default=32,
        ge=0,
        description="Worker: size of the disk reserve, a file (``{data_dir}/disk-reserve``) "
        "deleted when the disk fills so that the run's pause and its reason can still be "
        "written, and made again before the next step when the disk has room for it twice "
        "over (a step that finds no such room pauses the run at once). 0 = none.",
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="Largest request body of one upload (a folder or a zip archive), and the "
        "largest total uncompressed size of a zip archive's entries.",
    )
    max_file_bytes: int = Field(
        default=50 * 1024**2,
        gt=0,
        description="Largest single image file; larger files are refused (``too-large``).",
    )
    max_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Decompression-bomb guard: images whose header claims more pixels are "
        "refused before decoding (``decompression-bomb``).",
    )
    max_files: int = Field(
        default=20_000,
        gt=0,
        description="Most files in one upload; a zip archive with more entries is refused.",
    )
    max_zip_ratio: float = Field(
        default=100.0,
        gt=1,
        description="Zip-bomb guard: an entry that inflates more than this many times (and to "
        "more than 1 MiB) is refused (``zip-bomb``).",
    )

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Settings:
        """Make paths absolute, fill the derived defaults, refuse unsafe production settings."""
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'ie.db'}"
        self.corpus_dir = (
            self.corpus_dir.expanduser().resolve()
            if self.corpus_dir is not None
            else self.data_dir / "corpus"
        )
        if self.engine_config is not None:
            self.engine_config = self.engine_config.expanduser().resolve()
        if self.env == "production":
            secret = self.secret_key.get_secret_value().strip()
            if not secret or secret == DEVELOPMENT_SECRET:
                raise ValueError(
                    "IE_SECRET_KEY must be set to a secret of your own when IE_ENV=production "
                    "(it is empty or still the development default); for example: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
            token = self.access_token.get_secret_value().strip() if self.access_token else ""
            if len(token) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"IE_ACCESS_TOKEN must be set to a token of at least {MIN_TOKEN_LENGTH} "
                    "characters when IE_ENV=production (it is "
                    f"{'missing' if not token else 'too short'}); for example: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
                )
        if self.access_token is not None:
            token = self.access_token.get_secret_value().strip()
            if len(token) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"IE_ACCESS_TOKEN is too short: at least {MIN_TOKEN_LENGTH} characters"
                )
            self.access_token = SecretStr(token)
        return self

    @property
    def runs_dir(self) -> Path:
        """Folder holding one run folder per run (``runs/{id}/``, the explorer's folder)."""
        return self.data_dir / "runs"

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded broker's messages (used when ``broker_url`` is None)."""
        return self.data_dir / "broker"

    @property
    def uploads_dir(self) -> Path:
        """Folder holding one sub-folder per upload."""
        return self.data_dir / "uploads"


@cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use and cached."""
    return Settings()
