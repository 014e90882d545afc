"""The address a request came from, as the login limits count it.

Behind TUNIX_TRUSTED_PROXY_COUNT proxies that each append the address they saw
to X-Forwarded-For (nginx's `$proxy_add_x_forwarded_for`), the client is the
entry that many places from the right: entries further left are whatever the
client itself sent, and are never trusted. Without proxies, or when the header
is shorter than the proxies would have made it, the address is the socket's
peer (REMOTE_ADDR). See docs/decisions.md#login-limits.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    remote: str | None = request.META.get("REMOTE_ADDR")
    hops: int = settings.TUNIX_TRUSTED_PROXY_COUNT
    if not hops:
        return remote
    header = request.META.get("HTTP_X_FORWARDED_FOR", "")
    forwarded = [part.strip() for part in header.split(",") if part.strip()]
    if len(forwarded) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-hops]))
    except ValueError:
        return remote
