#!/usr/bin/env python3
"""Writes small MaxMind DB files for ipguard's geo tests, so no database is downloaded.

    make_mmdb.py country OUT      GeoLite2-Country-like, IPv6 tree with IPv4 at ::/96
    make_mmdb.py country-v4 OUT   the same IPv4 networks in an IPv4-only tree
    make_mmdb.py asn OUT          GeoLite2-ASN-like
    make_mmdb.py large OUT [--prefixes N] [--country XL]
                                  N non-adjacent prefixes of one country, for timing

Uses mmdb-writer (PyPI, 0.2.x) from target/pytools. The expected contents are spelled
out in tests/tests/geo_db.rs; keep both in step.

Like MaxMind's own writer, the IPv6 trees alias ::ffff:0:0/96 (IPv4-mapped),
2001::/32 (Teredo) and 2002::/16 (6to4) to the IPv4 subtree by pointing them at its
node, so readers must not report those as IPv6 duplicates.
"""

import argparse
import sys

from mmdb_writer import MMDBWriter, MmdbU32, SearchTreeNode
from netaddr import IPNetwork, IPSet

# Aliases of the IPv4 subtree, as (first address as an int, prefix length).
ALIASES = [
    (IPNetwork("::ffff:0:0/96").value, 96),
    (IPNetwork("2001::/32").value, 32),
    (IPNetwork("2002::/16").value, 16),
]


def country(code, registered=None, name=None):
    """A GeoLite2-Country record; `registered` alone leaves `country` out."""
    rec = {}
    if code is not None:
        rec["country"] = {"iso_code": code}
        if name is not None:
            rec["country"]["names"] = {"en": name}
            rec["continent"] = {"code": "EU", "names": {"en": "Europe"}}
    rec["registered_country"] = {"iso_code": registered or code}
    return rec


# (networks, record), inserted in this order: a later, longer prefix splits an earlier one.
COUNTRY_DATA = [
    # Siblings that aggregate: 192.0.2.0/24 and 2001:db8:bb::/48.
    (["192.0.2.0/25", "192.0.2.128/25", "2001:db8:a::/48"], country("XA")),
    (["198.51.100.0/24", "2001:db8:bb::/49", "2001:db8:bb:8000::/49"], country("XB")),
    # Only registered_country: lookups fall back to it.
    (["203.0.113.0/24"], country(None, registered="XC")),
    (["12.0.0.0/8", "2600:1000::/28"], country("US")),
    # Inside US's 12.0.0.0/8: splits it.
    (["12.34.0.0/16", "2a02:2e0::/32"], country("DE")),
    # DE again, in a record of its own (another data offset).
    (["81.2.69.0/24"], country("DE", name="Germany")),
]

ASN_DATA = [
    (["192.0.2.0/24", "2001:db8:a::/48"], 64500, "Example Transit"),
    (["198.51.100.0/25", "198.51.100.128/25"], 64501, "Example Hosting"),
    (["203.0.113.0/24"], 64502, None),
    # A 32-bit ASN (private use range), stored as uint32 like every ASN in GeoLite2.
    (["2001:db8:c::/48"], 4200000000, "Example Wide"),
]


def writer(ip_version, database_type):
    return MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description="ipguard test database",
    )


def insert(w, nets, record):
    for net in nets:
        # One CIDR per IPSet: an IPSet would merge adjacent CIDRs into one.
        w.insert_network(IPSet([net]), record)


def alias_ipv4_subtree(w):
    """Points the alias prefixes at the node of ::/96, as MaxMind's writer does."""
    node = w.tree
    for _ in range(96):
        node = node.left
        if not isinstance(node, SearchTreeNode):
            sys.exit("no IPv4 subtree at ::/96 to alias")
    v4_root = node
    for value, length in ALIASES:
        bits = [(value >> (127 - i)) & 1 for i in range(length)]
        parent = w.tree
        for bit in bits[:-1]:
            child = parent.get_or_create(bit)
            if not isinstance(child, SearchTreeNode):
                sys.exit(f"data in the way of the alias {value:#x}/{length}")
            parent = child
        parent[bits[-1]] = v4_root


# The same, a release later: 203.0.113.0/24 moved to XB (the daemon must notice the file).
COUNTRY_DATA_MOVED = [
    (nets, country("XB")) if nets == ["203.0.113.0/24"] else (nets, rec)
    for nets, rec in COUNTRY_DATA
]


def make_country(out, ip_version, data=COUNTRY_DATA):
    w = writer(ip_version, "GeoLite2-Country")
    for nets, record in data:
        if ip_version == 4:
            nets = [n for n in nets if ":" not in n]
        insert(w, nets, record)
    if ip_version == 6:
        alias_ipv4_subtree(w)
    w.to_db_file(out)


def make_asn(out):
    w = writer(6, "GeoLite2-ASN")
    for nets, number, org in ASN_DATA:
        rec = {"autonomous_system_number": MmdbU32(number)}
        if org is not None:
            rec["autonomous_system_organization"] = org
        insert(w, nets, rec)
    alias_ipv4_subtree(w)
    w.to_db_file(out)


def large_prefixes(count):
    """`count` prefixes of mixed lengths, each followed by a gap of its own size so that
    none can aggregate: four fifths IPv4 from 11.0.0.0 (public space), one fifth IPv6
    from 2a0b::/16."""
    out = []
    n4 = count * 4 // 5
    lengths4 = [24, 24, 23, 22]
    cursor = IPNetwork("11.0.0.0/8").value
    for i in range(n4):
        size = 1 << (32 - lengths4[i % 4])
        cursor = (cursor + size - 1) // size * size
        out.append(f"{IPNetwork((cursor, 32)).ip}/{lengths4[i % 4]}")
        cursor += 2 * size
    lengths6 = [48, 48, 47, 44]
    cursor = IPNetwork("2a0b::/16").value
    for i in range(count - n4):
        size = 1 << (128 - lengths6[i % 4])
        cursor = (cursor + size - 1) // size * size
        out.append(f"{IPNetwork((cursor, 128)).ip}/{lengths6[i % 4]}")
        cursor += 2 * size
    return out


def make_large(out, count, code):
    w = writer(6, "GeoLite2-Country")
    insert(w, large_prefixes(count), country(code))
    # Another country, so the database is not all one record.
    insert(w, ["198.51.100.0/24"], country("XB"))
    alias_ipv4_subtree(w)
    w.to_db_file(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    for kind in ["country", "country-v4", "country-moved", "asn"]:
        sub.add_parser(kind).add_argument("out")
    large = sub.add_parser("large")
    large.add_argument("out")
    large.add_argument("--prefixes", type=int, default=100_000)
    large.add_argument("--country", default="XL")
    a = p.parse_args()
    if a.kind == "country":
        make_country(a.out, 6)
    elif a.kind == "country-v4":
        make_country(a.out, 4)
    elif a.kind == "country-moved":
        make_country(a.out, 6, COUNTRY_DATA_MOVED)
    elif a.kind == "asn":
        make_asn(a.out)
    else:
        make_large(a.out, a.prefixes, a.country)


if __name__ == "__main__":
    main()
