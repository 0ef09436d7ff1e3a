#!/usr/bin/env python3
"""Check that python-tuf's ngclient accepts a patchgate image repository.

Called by scripts/check-python-tuf.sh against a running server. Starting from a trusted root
(``--root``, the bootstrap a device is provisioned with), it refreshes the top-level metadata,
then for every ``--expect NAME=SHA256`` looks the target up (through the product's delegated
role), downloads it and compares the sha256 of the bytes. ``--absent NAME`` must not be found,
and ``--expect-root-version`` checks the root the updater ends up trusting, both in memory and
in the root.json it persisted to its metadata directory.

Prints one line per check, ``PASS <what>`` or ``FAIL <what>: <why>``, and exits 0 only if every
check passed (1 on a failed check, 2 on bad arguments). The caller counts the lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import traceback
from pathlib import Path

try:
    from tuf.api.metadata import Metadata, Root
    from tuf.ngclient import Updater
except ImportError as exc:  # pragma: no cover - environment problem, reported plainly
    print(f"FAIL import python-tuf: {exc}", flush=True)
    sys.exit(1)


class Checks:
    """Collects PASS/FAIL lines."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.failed = 0
        self.passed = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"PASS [{self.label}] {what}", flush=True)

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"FAIL [{self.label}] {what}: {why}", flush=True)

    def check(self, cond: bool, what: str, why: str = "") -> bool:
        if cond:
            self.ok(what)
        else:
            self.fail(what, why or "condition false")
        return cond


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def parse_expect(value: str) -> tuple[str, str]:
    name, sep, digest = value.rpartition("=")
    if not sep or not name or len(digest) != 64:
        raise argparse.ArgumentTypeError(f"expected NAME=SHA256, got {value!r}")
    return name, digest.lower()


def parse_hwid(value: str) -> tuple[str, str]:
    product, sep, hwid = value.partition("=")
    if not sep or not product or not hwid:
        raise argparse.ArgumentTypeError(f"expected PRODUCT=HARDWARE_ID, got {value!r}")
    return product, hwid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="ngclient", help="tag printed on every line")
    parser.add_argument("--metadata-url", required=True, help="e.g. http://127.0.0.1:8080/repo/metadata/")
    parser.add_argument("--targets-url", required=True, help="e.g. http://127.0.0.1:8080/repo/targets/")
    parser.add_argument("--root", required=True, type=Path, help="trusted root bytes to bootstrap from")
    parser.add_argument("--metadata-dir", required=True, type=Path, help="updater metadata cache")
    parser.add_argument("--download-dir", required=True, type=Path, help="where targets are downloaded")
    parser.add_argument("--expect", action="append", type=parse_expect, default=[],
                        metavar="NAME=SHA256", help="a target that must verify and download")
    parser.add_argument("--absent", action="append", default=[], metavar="NAME",
                        help="a target name that must not be found")
    parser.add_argument("--not-listed", action="append", default=[], metavar="NAME",
                        help="a target that must not be listed: not found, or its lookup fails verification")
    parser.add_argument("--hardware-id", action="append", type=parse_hwid, default=[],
                        metavar="PRODUCT=HWID", help="hardware id a product's targets must list")
    parser.add_argument("--expect-root-version", type=int, default=None)
    args = parser.parse_args()

    c = Checks(args.label)
    hwids = dict(args.hardware_id)

    try:
        bootstrap = args.root.read_bytes()
        boot_version = Metadata[Root].from_bytes(bootstrap).signed.version
    except Exception as exc:  # noqa: BLE001
        c.fail(f"read bootstrap root {args.root}", describe(exc))
        return 1

    args.metadata_dir.mkdir(parents=True, exist_ok=True)
    args.download_dir.mkdir(parents=True, exist_ok=True)

    try:
        updater = Updater(
            metadata_dir=str(args.metadata_dir),
            metadata_base_url=args.metadata_url,
            target_dir=str(args.download_dir),
            target_base_url=args.targets_url,
            bootstrap=bootstrap,
        )
    except Exception as exc:  # noqa: BLE001
        c.fail(f"load bootstrap root v{boot_version}", describe(exc))
        return 1
    c.ok(f"ngclient accepts bootstrap root v{boot_version}")

    try:
        updater.refresh()
    except Exception as exc:  # noqa: BLE001
        c.fail("refresh (root, timestamp, snapshot, targets)", describe(exc))
        traceback.print_exc(file=sys.stdout)
        return 1
    # ngclient has no public accessor for the metadata it trusts after a refresh.
    trusted = updater._trusted_set
    c.ok(
        f"refresh: root v{trusted.root.version}, timestamp v{trusted.timestamp.version},"
        f" snapshot v{trusted.snapshot.version}, targets v{trusted.targets.version}"
    )

    if args.expect_root_version is not None:
        want = args.expect_root_version
        got = trusted.root.version
        c.check(got == want, f"trusted root is v{want} (in memory)", f"trusted root is v{got}")
        root_file = args.metadata_dir / "root.json"
        try:
            persisted = Metadata[Root].from_bytes(root_file.read_bytes()).signed.version
            c.check(persisted == want, f"persisted {root_file.name} is v{want}",
                    f"persisted root is v{persisted}")
        except Exception as exc:  # noqa: BLE001
            c.fail(f"persisted {root_file.name} is v{want}", describe(exc))

    for name, sha256 in args.expect:
        try:
            info = updater.get_targetinfo(name)
        except Exception as exc:  # noqa: BLE001
            c.fail(f"get_targetinfo {name}", describe(exc))
            continue
        if not c.check(info is not None, f"get_targetinfo {name}", "not found"):
            continue
        c.check(info.hashes.get("sha256") == sha256, f"signed sha256 of {name}",
                f"metadata says {info.hashes.get('sha256')}, expected {sha256}")

        product, _, rest = name.partition("/")
        version = rest.partition("/")[0]
        custom = info.custom or {}
        if "~from-" in name:
            # A delta target: its custom names the full image it produces, of the same version.
            produces = (custom.get("delta") or {}).get("target") or {}
            c.check(produces.get("name") == name.partition("~")[0],
                    f"custom.delta.target of {name} is {name.partition('~')[0]}",
                    f"custom is {json.dumps(custom, sort_keys=True)}")
        else:
            c.check(custom.get("version") == version, f"custom.version of {name} is {version}",
                    f"custom is {json.dumps(custom, sort_keys=True)}")
        if product in hwids and "~from-" not in name:
            c.check(hwids[product] in (custom.get("hardware_ids") or []),
                    f"custom.hardware_ids of {name} lists {hwids[product]}",
                    f"custom is {json.dumps(custom, sort_keys=True)}")

        dest = args.download_dir / hashlib.sha256(name.encode()).hexdigest()
        try:
            path = updater.download_target(info, filepath=str(dest))
            data = Path(path).read_bytes()
        except Exception as exc:  # noqa: BLE001
            c.fail(f"download_target {name}", describe(exc))
            continue
        actual = hashlib.sha256(data).hexdigest()
        c.check(actual == sha256 and len(data) == info.length,
                f"download_target {name} ({len(data)} bytes, sha256 {actual[:12]}...)",
                f"got {len(data)} bytes with sha256 {actual}, expected {info.length} bytes {sha256}")

    for name in args.absent:
        try:
            info = updater.get_targetinfo(name)
        except Exception as exc:  # noqa: BLE001
            c.fail(f"unpublished {name} is not found", describe(exc))
            continue
        c.check(info is None, f"unpublished {name} is not found",
                f"get_targetinfo returned {info!r}")

    for name in args.not_listed:
        try:
            info = updater.get_targetinfo(name)
        except Exception as exc:  # noqa: BLE001 - a forged role must fail verification
            c.ok(f"{name} is not listed (lookup refused: {type(exc).__name__})")
            continue
        c.check(info is None, f"{name} is not listed", f"get_targetinfo returned {info!r}")

    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
