"""Build the configured engine: one setting switches every agent to another backend."""

from __future__ import annotations

from manyheads.errors import ConfigError
from manyheads.models.engine import Engine
from manyheads.settings import Settings, get_settings

ENGINES = ("local", "vllm", "openai")


def make_engine(engine: str | None = None, model: str | None = None,
                settings: Settings | None = None, **options: object) -> Engine:
    """``engine`` is ``local``, ``vllm`` or ``openai``; defaults come from ``MANYHEADS_*``."""
    settings = settings or get_settings()
    name = (engine or settings.engine).strip().lower()
    model = model or settings.model
    if name == "local":
        from manyheads.models.local.engine import LocalEngine

        return LocalEngine(model, **{"decoder": settings.decoder, **options})
    if name == "vllm":
        from manyheads.models.vllm_engine import VLLMEngine

        return VLLMEngine(model, **options)
    if name == "openai":
        from manyheads.models.openai_engine import OpenAIEngine

        return OpenAIEngine(model=model, base_url=settings.base_url, api_key=settings.api_key,
                            timeout_s=settings.request_timeout_s, max_retries=settings.max_retries,
                            **options)
    raise ConfigError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
