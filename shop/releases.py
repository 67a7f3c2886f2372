"""Shop releases: what each one does to checkout.

``v1`` is healthy. ``v2`` is the bad release of the incident drill: checkout
gets about 800 ms slower and about 40 % of payment authorisations fail
with a 5xx — bad enough that ShopHighErrorRate (per instance, 30 s window,
``for: 5s``) pages within 30 s of the deploy's start. Rolling back to ``v1`` is the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.errors import ConfigError


@dataclass(frozen=True)
class Release:
    """The behaviour a release adds to the shop."""

    name: str
    checkout_delay_s: float = 0.0
    payment_error_rate: float = 0.0


RELEASES: dict[str, Release] = {
    "v1": Release("v1"),
    "v2": Release("v2", checkout_delay_s=0.8, payment_error_rate=0.40),
}


def get_release(name: str) -> Release:
    """The release called ``name``, or a ConfigError listing the known ones."""
    try:
        return RELEASES[name]
    except KeyError:
        known = ", ".join(sorted(RELEASES))
        raise ConfigError(
            f"shop.release: unknown release {name!r}; set VIGIL_SHOP_RELEASE to one of {known}"
        ) from None
