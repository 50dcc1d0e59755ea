"""Settings from the environment (``MANYHEADS_*``) and the CLI: one typed tree.

Switching every agent to a stronger remote model is one setting:
``MANYHEADS_ENGINE=openai MANYHEADS_BASE_URL=... MANYHEADS_MODEL=...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from manyheads.models.local.decoders import DecoderName

EngineName = Literal["local", "vllm", "openai"]
DEFAULT_MODEL = "smollm2-135m-instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MANYHEADS_", extra="ignore")

    engine: EngineName = "vllm"
    model: str = DEFAULT_MODEL
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    home: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir("manyheads")))
    database_url: str | None = None
    request_timeout_s: float = 120.0
    max_retries: int = 3
    # Utterance hygiene and the rooms' repetition control (``agents.hygiene.enabled``). Off
    # (``MANYHEADS_HYGIENE=0``) only to measure what they do: ``bench/quality.py``.
    hygiene: bool = True
    # The local engine's decode step (``models/local/decoders.py``); the default is the fastest
    # lossless one ``bench/medusa.py`` measured on the 2-core CPU.
    decoder: DecoderName = "draft-hydra"

    @field_validator("engine", mode="before")
    @classmethod
    def _normalise_engine(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def get_settings(**overrides: object) -> Settings:
    """Fresh settings each call, so tests and the CLI can change the environment."""
    from pydantic import ValidationError

    from manyheads.errors import ConfigError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"MANYHEADS_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
