"""A real MaxMind-format City database, written by mmdb-writer (as MaxMind's own writer lays one out) for the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def _city(country: str, region: str, region_name: str, city: str) -> dict[str, Any]:
    return {
        "country": {"iso_code": country, "names": {"en": country}},
        "subdivisions": [{"iso_code": region, "names": {"en": region_name}}],
        "city": {"names": {"en": city}},
    }


# Documentation ranges (RFC 5737, RFC 3849): the test clients' addresses.
PLACES = {
    "203.0.113.0/24": _city("US", "CA", "California", "San Francisco"),
    "198.51.100.0/24": _city("DE", "BE", "Berlin", "Berlin"),
    "2001:db8::/32": _city("FR", "IDF", "Ile-de-France", "Paris"),
}


def write_city_database(path: Path) -> Path:
    """A GeoLite2-City-shaped database of PLACES at `path`."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for network, record in PLACES.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path
