"""What a user who is not staff may see of the GPU: its state, GPU, price and what it is doing, never
where it is or how to get in.

The instance's address (`http://IP:port`) and its SwarmUI token are owner-level access to a paid GPU.
They reach text that users see by way of messages: HTTP errors name the URL they failed on, events
say where SwarmUI became ready, a job that moved to fal quotes the GPU's error. Such text is shown to
staff as it is and to everyone else with every address (and the instance's own token and URL, when
known) replaced. Nothing stored is changed: this is for display and JSON only.
"""

import re

ADDRESS_HIDDEN = "[address hidden]"
TOKEN_HIDDEN = "[token hidden]"
_ADDRESSES = [
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>)]+", re.IGNORECASE),  # any URL
    re.compile(r"\[[0-9a-f:.]+\](?::\d+)?", re.IGNORECASE),  # [IPv6]:port
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"),  # IPv4[:port]
    re.compile(r"\b(?:[a-z0-9-]+\.)+[a-z]{2,}:\d+\b", re.IGNORECASE),  # host.name:port
]


def sees_addresses(user) -> bool:
    return bool(user is not None and getattr(user, "is_staff", False))


def redact(text: str, *, tokens=(), addresses=()) -> str:
    """`text` with each of `tokens`, each of `addresses` and anything else that looks like an address replaced."""
    if not text:
        return text
    for token in tokens:
        if token:
            text = text.replace(token, TOKEN_HIDDEN)
    for address in addresses:
        if address:
            text = text.replace(address, ADDRESS_HIDDEN)
    for pattern in _ADDRESSES:
        text = pattern.sub(ADDRESS_HIDDEN, text)
    return text


def shown(text: str, user, instance=None) -> str:
    """`text` as `user` may see it; `instance` is the GPU it may mention, if known."""
    if sees_addresses(user):
        return text
    if instance is None:
        return redact(text)
    return redact(text, tokens=(instance.swarmui_token,), addresses=(instance.base_url,))
