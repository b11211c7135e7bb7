"""Which network addresses a URL source may lead to: ``AddressPolicy``.

Pure data and the standard library only, so ``vfe.settings`` can parse
ALLOW_PRIVATE_URLS without importing the HTTP client; ``vfe.fetch`` enforces the policy
on every connection it makes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata and platform services that ``is_global`` does not catch on every
# Python 3.11 patch release: Oracle's 192.0.0.192 (192.0.0.0/24 is IETF protocol
# assignments) and Azure's wireserver. 169.254.169.254, fd00:ec2::254 and Alibaba's
# 100.100.100.200 are link-local, unique-local and CGNAT, so not global anyway.
_PLATFORM = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("168.63.129.16/32"))


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a URL may lead to: by default only public (global unicast) ones;
    ``allowed`` networks are let through although private; ``allow_private`` lets
    everything through."""

    allow_private: bool = False
    allowed: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> AddressPolicy:
        """The ALLOW_PRIVATE_URLS value: false/0/no/empty, true/1/yes, or comma-separated
        networks (CIDR or single addresses); ``ValueError`` for a bad network."""
        text = raw.strip()
        if text.lower() in ("", "false", "0", "no", "off"):
            return cls()
        if text.lower() in ("true", "1", "yes", "on"):
            return cls(allow_private=True)
        networks: list[Network] = []
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"ALLOW_PRIVATE_URLS: {part.strip()!r} is not a network; give true, false "
                    "or comma-separated networks such as 10.1.0.0/16,127.0.0.2"
                ) from None
        return cls(allowed=tuple(networks))

    def __str__(self) -> str:
        """The policy as ALLOW_PRIVATE_URLS would spell it; ``parse`` reads it back."""
        if self.allow_private:
            return "true"
        return ",".join(str(network) for network in self.allowed) or "false"

    def permits(self, ip: Address) -> bool:
        """Whether a connection to ``ip`` is allowed."""
        if self.allow_private:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in network for network in self.allowed):
            return True
        if not ip.is_global or ip.is_multicast or ip.is_reserved:
            return False
        if any(ip in network for network in _PLATFORM):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
            return self.permits(ip.sixtofour)  # 6to4 carries an IPv4 address
        return True
