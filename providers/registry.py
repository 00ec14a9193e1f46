"""Provider names → classes, resolved lazily from the GENHUB_PROVIDERS setting (like EMAIL_BACKEND).

The `vastai` provider lives in `gpu_instances`, above this app; resolving a dotted path at run time
keeps every import pointing down.
"""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from providers.base import Provider


def provider_names() -> list[str]:
    return list(settings.GENHUB_PROVIDERS)


@cache
def _provider_class(name: str) -> type[Provider]:
    return import_string(settings.GENHUB_PROVIDERS[name])


def get_provider(name: str) -> Provider:
    if name not in settings.GENHUB_PROVIDERS:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(provider_names())}")
    return _provider_class(name)()
