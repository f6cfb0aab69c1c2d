"""What enrichment costs per request on storage's thread, uncached and cached, and what it adds to a process's RSS.

    .venv/bin/python deploy/bench/enrich.py [GEOIP_DATABASE]

Uses the real libraries (crawler-user-agents through RE2, ua-parser with ua-parser-rs, maxminddb). The user agents
are fake-useragent's real browsers (a dev dependency) plus crawler-user-agents' examples; the addresses are random.
Without a database argument a small City database is written with mmdb-writer (also a dev dependency), so the
geography figure is the lookup's cost, not a real database's (GeoLite2-City is ~60 MB; a lookup reads ~5 nodes
more). Prints microseconds per request (best of 3 rounds) and the RSS (MB) after each step of loading.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def agents() -> list[str]:
    import crawleruseragents

    data = files("fake_useragent").joinpath("data/browsers.jsonl").read_text()
    browsers = sorted({json.loads(line)["useragent"] for line in data.splitlines() if line.strip()})
    crawlers = [a for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA for a in entry["instances"]]
    return browsers + crawlers


def city_database(folder: Path) -> Path:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for first in range(1, 224):
        record = {"country": {"iso_code": "US"}, "subdivisions": [{"iso_code": "CA"}], "city": {"names": {"en": "X"}}}
        writer.insert_network(IPSet([f"{first}.0.0.0/8"]), record)
    path = folder / "bench.mmdb"
    writer.to_db_file(str(path))
    return path


def best(run: object, rounds: int = 3) -> float:
    assert callable(run)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        n = run()
        times.append((time.perf_counter() - started) / n * 1e6)
    return min(times)


def main() -> None:  # noqa: C901 (one measurement after another)
    base = rss_mb()
    from collector.enrich.enricher import Enricher
    from collector.enrich.geo import GeoLookup
    from collector.enrich.policy import EnrichPolicy

    imported = rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else city_database(Path(folder))
        geo = GeoLookup(path)
        built = rss_mb()
        enricher = Enricher(geo)
        sample = agents()
        rng = random.Random(1)
        addresses = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                     for _ in range(len(sample))]  # fmt: skip
        policy = EnrichPolicy.from_config("bench", "standard", {})
        enricher.agents.parse(sample[0])  # loads uap-core's rules: measured as RSS, not as the first request's time
        loaded = rss_mb()

        def bots() -> int:
            for agent in sample:
                enricher.bots.classify(agent)
            return len(sample)

        def parse() -> int:
            for agent in sample:
                enricher.agents.parse(agent)
            return len(sample)

        def lookup() -> int:
            for address in addresses:
                geo.lookup(address)
            return len(addresses)

        pairs = sorted(set(zip(sample, addresses, strict=True)))

        def uncached() -> int:
            fresh = Enricher(geo)  # empty caches; every pair's agent and address are distinct
            fresh.agents, fresh.bots = enricher.agents, enricher.bots  # the rules already loaded and compiled
            for agent, address in pairs:
                fresh.fields((policy, agent, address, None, False))
            return len(pairs)

        def cached() -> int:
            for agent, address in zip(sample, addresses, strict=True):
                enricher.fields((policy, agent, address, None, False))
            return len(sample)

        print(f"user agents: {len(sample)} ({len(sample) - 2123} browsers, 2123 crawler examples)")
        print(f"bot verdict (RE2 set, uncached):    {best(bots):7.2f} us")
        print(f"ua-parser (ua-parser-rs, uncached): {best(parse):7.2f} us")
        print(f"geo lookup (maxminddb, uncached):   {best(lookup):7.2f} us")
        print(f"request enrichment, uncached:       {best(uncached):7.2f} us")
        cached()  # fill the caches
        print(f"request enrichment, cached:         {best(cached):7.2f} us")
        rows = 20
        from collector.storage import copyformat
        from collector.storage.batch import Batch

        row = copyformat.ROW_START + b"x" * 300 + copyformat.ENRICH_NULLS + copyformat.timestamp_ns(time.time_ns())
        request = (policy, sample[0], addresses[0], None, False)
        enricher.fields(request)  # cached: what is left is the patching of each row

        def patch() -> int:
            for _ in range(1000):
                enricher.apply(Batch(b"x" * 16, [row] * rows, {"bench": rows}, requests=[(rows, request)]))
            return 1000 * rows

        print(f"batch apply, per row (20-row request, cached): {best(patch):7.2f} us")
        print(
            f"RSS MB: start {base:.1f}, imports +{imported - base:.1f}, database open +{built - imported:.1f},"
            f" classifier and ua-parser rules loaded +{loaded - built:.1f}, caches filled +{rss_mb() - loaded:.1f}"
        )


if __name__ == "__main__":
    main()
