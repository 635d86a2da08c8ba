"""Pure checks of names and addresses, the same rules the CRD's schema states.

Each ``check_*`` returns ``None`` when the value is fine, or a sentence that says
what is wrong and how to fix it (without the field name; callers prefix it).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from penetrator.api.constants import (
    MAX_IP_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_NODE_NAME_LENGTH,
    MAX_OBJECT_NAME_LENGTH,
    MAX_PREFIX_LENGTH,
    NAME_SUFFIX_LENGTH,
)

# The regular expressions Kubernetes uses (k8s.io/apimachinery/pkg/util/validation).
DNS1123_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN: Final = rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*"
LABEL_VALUE: Final = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
IP_CHARACTERS: Final = r"[0-9A-Fa-f.:]+"

DNS1123_LABEL_RE: Final = re.compile(rf"^{DNS1123_LABEL}$")
DNS1123_SUBDOMAIN_RE: Final = re.compile(rf"^{DNS1123_SUBDOMAIN}$")
LABEL_VALUE_RE: Final = re.compile(rf"^{LABEL_VALUE}$")
IP_CHARACTERS_RE: Final = re.compile(rf"^{IP_CHARACTERS}$")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IP:
    """The address ``text`` names, or ``ValueError`` saying why it is not one.

    Accepts exactly what Kubernetes' CEL ``isIP`` accepts: IPv4 in dotted decimal
    without leading zeros, IPv6 without a zone, no IPv4-mapped IPv6.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected an IP address as a string, got {type(text).__name__}")
    if len(text) > MAX_IP_LENGTH or not IP_CHARACTERS_RE.fullmatch(text):
        raise ValueError(
            f"{_show(text)} is not an IP address: only hex digits, '.' and ':' are allowed "
            "(write e.g. 172.21.3.194 or fd00::1)"
        )
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"{_show(text)} is not an IPv4 or IPv6 address (write e.g. 172.21.3.194 or fd00::1)"
        ) from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(
            f"{_show(text)} is an IPv4-mapped IPv6 address; write the IPv4 address "
            f"{address.ipv4_mapped} instead"
        )
    return address


def canonical_ip(text: str) -> str:
    """The canonical spelling of an address (``fd00:0::1`` -> ``fd00::1``)."""
    return str(parse_ip(text))


def check_ip(text: str) -> str | None:
    try:
        parse_ip(text)
    except ValueError as e:
        return str(e)
    return None


MULTICAST_V4: Final = ipaddress.ip_network("224.0.0.0/4")
MULTICAST_V6: Final = ipaddress.ip_network("ff00::/8")
ADDRESS_CLASSES: Final = (
    ("loopback", "127.0.0.0/8, ::1"),
    ("unspecified", "0.0.0.0, ::"),
    ("link-local", "169.254.0.0/16, fe80::/10"),
    ("multicast", "224.0.0.0/4, ff00::/8"),
)
"""Address classes that are never a machine to install, with their ranges (for
messages); the CRD's rule on each address refuses the same."""


def address_class(address: IP) -> str | None:
    """The class of ``ADDRESS_CLASSES`` ``address`` falls in, or None (a unicast
    address a machine may have). Loopback: the Job would connect to its own host (in
    direct mode the control plane's); unspecified: the same on most stacks."""
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address in (MULTICAST_V4 if address.version == 4 else MULTICAST_V6):
        return "multicast"
    return None


def check_machine_address(text: str) -> str | None:
    """``check_ip``, then: not an address that cannot be a remote machine (loopback,
    unspecified, link-local, multicast)."""
    try:
        address = parse_ip(text)
    except ValueError as e:
        return str(e)
    kind = address_class(address)
    if kind is None:
        return None
    ranges = dict(ADDRESS_CLASSES)[kind]
    article = "an" if kind[0] in "aeiou" else "a"
    return (
        f"{text} is {article} {kind} address ({ranges}), never a machine to install: the install "
        "Job would connect to itself or to no machine; give the machine's address in its "
        "network"
    )


def check_dns1123_label(value: str, max_length: int = MAX_LABEL_LENGTH) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"{_show(value)} is {len(value)} characters long; use at most {max_length}"
    if not DNS1123_LABEL_RE.fullmatch(value):
        return (
            f"{_show(value)} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. edge or edge-bj)"
        )
    return None


def check_dns1123_subdomain(value: str, max_length: int = MAX_OBJECT_NAME_LENGTH) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"{_show(value)} is {len(value)} characters long; use at most {max_length}"
    if not DNS1123_SUBDOMAIN_RE.fullmatch(value):
        return (
            f"{_show(value)} is not a DNS-1123 subdomain: use lowercase letters, digits, '-' "
            "and '.', each dot-separated part starting and ending with a letter or digit "
            "(e.g. edge-1mokvl)"
        )
    return None


def check_node_name(value: str) -> str | None:
    """Node names we plan: DNS-1123 subdomain syntax, at most 63 characters."""
    return check_dns1123_subdomain(value, MAX_NODE_NAME_LENGTH)


def check_prefix(value: str) -> str | None:
    """``nodeNamePrefix``: a DNS-1123 label short enough for ``<prefix>-<6 chars>``."""
    problem = check_dns1123_label(value, MAX_PREFIX_LENGTH)
    if problem is not None and len(value) > MAX_PREFIX_LENGTH:
        return (
            f"{problem}, so that <prefix>-<{NAME_SUFFIX_LENGTH} random chars> fits "
            f"in {MAX_NODE_NAME_LENGTH} characters"
        )
    return problem


def check_label_value(value: str) -> str | None:
    if len(value) > MAX_LABEL_LENGTH:
        return f"{_show(value)} is {len(value)} characters long; use at most {MAX_LABEL_LENGTH}"
    if not LABEL_VALUE_RE.fullmatch(value):
        return (
            f"{_show(value)} is not a label value: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _show(value: str, limit: int = 80) -> str:
    """A value quoted for a message, cut so a hostile value cannot flood a log."""
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)
