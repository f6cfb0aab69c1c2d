"""Which directory authorizes domains, from Settings: pixel-management, or the development domains."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from collector.settings import Settings

if TYPE_CHECKING:
    from collector.ingest.auth import DomainDirectory

logger = logging.getLogger(__name__)


def make_directory(settings: Settings) -> DomainDirectory:
    """pixel-management when PIXEL_MANAGEMENT_URL is set (required in production); else, in development, the defaults
    plus AUTHORIZED_DOMAINS_FILE plus AUTHORIZED_DOMAINS (a ValueError naming the file and entry if malformed)."""
    # Imported here: __main__'s supervising parent calls check_directory, and keeps no HTTP client in its memory.
    from collector.ingest.auth import DEFAULT_DOMAINS_FILE, FileDirectory, PixelManagementDirectory

    if settings.pixel_management_url:
        return PixelManagementDirectory(settings.pixel_management_url, timeout_s=settings.auth_timeout_s)
    files = [("development defaults", DEFAULT_DOMAINS_FILE)]
    if settings.authorized_domains_file:
        files.append(("AUTHORIZED_DOMAINS_FILE", Path(settings.authorized_domains_file)))
    return FileDirectory(files, settings.hash_secret, settings.authorized_domains)


def check_directory(settings: Settings) -> None:
    """Read the development domains now, before anything starts, so that a malformed file or entry stops the start
    with one line (the ValueError) rather than a worker's traceback; say so when PIXEL_MANAGEMENT_URL overrides them."""
    if settings.pixel_management_url:
        ignored = [
            name
            for name, value in (
                ("AUTHORIZED_DOMAINS_FILE", settings.authorized_domains_file),
                ("AUTHORIZED_DOMAINS", settings.authorized_domains),
            )
            if value
        ]
        if ignored:
            logger.warning("%s ignored: PIXEL_MANAGEMENT_URL authorizes the domains", " and ".join(ignored))
        return
    make_directory(settings)
