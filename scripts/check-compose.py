#!/usr/bin/env python3
"""Checks docker-compose.yml against the key model, then runs its sequence of commands natively.

This machine has no container runtime, so the compose file cannot be brought up here. What is
checked instead:

1. The file itself (parsed, not grepped): the server container mounts keys/online only, read
   only, and no other service but the one-shot `init` (behind a profile) mounts keys at all;
   every long-running service restarts and has a health check; the server waits for a healthy
   PostgreSQL and for the bucket to exist; TLS is terminated by Caddy in front of the server,
   whose port is not published; the server's settings name PostgreSQL, an s3:// store and an
   https public URL.
2. The same sequence natively, with the binaries under test: `keys generate`, `repo init` with
   every key on a fresh PostgreSQL database (the `init` service), a bucket on a real S3 API
   (moto, standing in for MinIO; the `bucket` service), then `serve` with only a copy of
   keys/online/ (the `patchgate` service), ready on /readyz (its health check), then a token, a
   manufacturer-signed product delegated in a ceremony (prepare, sign offline, submit), a release
   signed with the manufacturer's key and its download checked byte for byte, and SIGTERM ending
   in exit 0. A server given the offline keys too must refuse to start.

Usage: check-compose.py --bin-dir DIR [--postgres URL]. Run with the venv
`scripts/ensure-venv.sh moto` makes (PyYAML, boto3, moto). Exits 0 when everything held.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS: list[str] = []


def expect(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        PROBLEMS.append(what)


def check_file(path: Path) -> dict:
    compose = yaml.safe_load(path.read_text())
    services = compose.get("services", {})
    expect(set(services) >= {"postgres", "minio", "bucket", "init", "patchgate", "caddy"},
           f"services: {sorted(services)} include postgres, minio, bucket, init, patchgate, caddy")
    server = services.get("patchgate", {})
    env = server.get("environment", {})

    key_mounts = {name: [v for v in s.get("volumes", []) if isinstance(v, str) and v.startswith("./keys")]
                  for name, s in services.items()}
    expect(key_mounts.get("patchgate") == ["./keys/online:/keys/online:ro"],
           f"the server mounts keys/online only, read only: {key_mounts.get('patchgate')}")
    expect(env.get("PATCHGATE_KEYS_DIR") == "/keys", "the server's keys_dir is the mount's parent")
    others = {n: m for n, m in key_mounts.items() if m and n not in ("patchgate", "init")}
    expect(not others, f"no other service mounts keys: {others}")
    init = services.get("init", {})
    expect(init.get("profiles") == ["init"], "init runs only when asked for (profile init)")
    expect(all(v.endswith(":ro") for v in key_mounts.get("init", [])) and bool(key_mounts.get("init")),
           "init reads the keys through a read-only mount")
    expect(init.get("command") == ["repo", "init"], "init runs `repo init`")

    for name in ("postgres", "minio", "patchgate", "caddy"):
        s = services.get(name, {})
        expect(s.get("restart") in ("unless-stopped", "always"), f"{name} restarts")
        if name != "caddy":
            expect("healthcheck" in s, f"{name} has a health check")
    depends = server.get("depends_on", {})
    expect(depends.get("postgres", {}).get("condition") == "service_healthy",
           "the server waits for a healthy PostgreSQL")
    expect(depends.get("bucket", {}).get("condition") == "service_completed_successfully",
           "the server waits until the bucket exists")
    bucket_command = " ".join(services.get("bucket", {}).get("command", []))
    expect("mc mb" in bucket_command and "|| true" not in bucket_command,
           "the bucket service creates the bucket, and a failure is not hidden")
    health = " ".join(server.get("healthcheck", {}).get("test", []))
    expect("/readyz" in health, "the server's health check asks /readyz")

    expect("ports" not in server, "the server's plain-http port is not published")
    caddy = services.get("caddy", {})
    expect("patchgate:8080" in caddy.get("command", []) and "443:443" in caddy.get("ports", []),
           "Caddy terminates TLS on 443 and forwards to the server")
    expect(env.get("PATCHGATE_DATABASE_URL", "").startswith("postgres://"), "the server uses PostgreSQL")
    expect(env.get("PATCHGATE_STORE_URL", "").startswith("s3://"), "the server uses the S3 store")
    expect(env.get("PATCHGATE_PUBLIC_URL", "").startswith("https://"), "the public URL is https")
    expect(server.get("stop_grace_period") is not None, "SIGTERM gets time to drain")
    return compose


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict[str, str], cwd: Path, what: str, stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, input=stdin, timeout=120)
    expect(proc.returncode == 0, f"{what}" + ("" if proc.returncode == 0 else f": {proc.stderr.strip()[-800:]}"))
    return proc.stdout


def http(method: str, url: str, token: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def native_sequence(bin_dir: Path, postgres: str, compose: dict) -> None:
    patchgate = str(bin_dir / "patchgate")
    work = Path(tempfile.mkdtemp(prefix="compose-check."))
    database = f"patchgate_compose_{secrets.token_hex(4)}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHGATE_", "AWS_"))}
    base_env["NO_COLOR"] = "1"
    s3 = subprocess.Popen([sys.executable, str(ROOT / "tests/python/s3_server.py")],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server = None
    try:
        info = json.loads(s3.stdout.readline())
        run(["psql", postgres, "-qc", f"CREATE DATABASE {database}"], base_env, work, "a fresh PostgreSQL database")
        db_url = postgres.rsplit("/", 1)[0] + f"/{database}"

        # The init service: every key, once, on the database.
        run([patchgate, "keys", "generate", "--out", "keys", "--root-keys", "3", "--root-threshold", "2"],
            base_env, work, "keys generate (3 root keys, threshold 2)")
        init_env = dict(base_env, PATCHGATE_KEYS_DIR=str(work / "keys"), PATCHGATE_DATABASE_URL=db_url,
                        PATCHGATE_DATA_DIR=str(work / "init-data"))
        run([patchgate, "repo", "init"], init_env, work, "repo init with the offline keys (the init service)")

        # The server: the compose file's settings, with only keys/online and the S3 store.
        server_keys = work / "server-keys"
        shutil.copytree(work / "keys" / "online", server_keys / "online")
        port = free_port()
        bucket_prefix = compose["services"]["patchgate"]["environment"]["PATCHGATE_STORE_URL"].split("/", 3)[3]
        server_env = dict(
            base_env,
            PATCHGATE_LISTEN=f"127.0.0.1:{port}",
            PATCHGATE_PUBLIC_URL="https://localhost",
            PATCHGATE_DATABASE_URL=db_url,
            PATCHGATE_STORE_URL=f"s3://{info['bucket']}/{bucket_prefix}",
            PATCHGATE_KEYS_DIR=str(server_keys),
            PATCHGATE_DATA_DIR=str(work / "data"),
            AWS_ACCESS_KEY_ID=info["access_key_id"],
            AWS_SECRET_ACCESS_KEY=info["secret_access_key"],
            AWS_ENDPOINT=info["endpoint"],
            AWS_ALLOW_HTTP="true",
            AWS_REGION=info["region"],
        )
        refused = subprocess.run([patchgate, "serve"], env=dict(server_env, PATCHGATE_KEYS_DIR=str(work / "keys")),
                                 cwd=work, capture_output=True, text=True, timeout=60)
        expect(refused.returncode != 0 and "can read offline keys" in refused.stderr,
               "a server given keys/offline too refuses to start")

        log = open(work / "server.log", "wb")
        server = subprocess.Popen([patchgate, "serve"], env=server_env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = http("GET", f"{base}/readyz")[0] == 200
            except OSError:
                ready = False
            if ready:
                break
            time.sleep(0.2)
        expect(ready, "the server with keys/online only becomes ready (/readyz 200, the health check)")
        if not ready:
            print((work / "server.log").read_text(errors="replace")[-3000:])
            return

        admin = run([patchgate, "token", "create", "--role", "admin", "--name", "compose"],
                    dict(server_env), work, "an admin token").strip().splitlines()[-1]
        # A product as production has it: the manufacturer's key, delegated by the offline
        # targets key in a ceremony, and a release signed on the manufacturer's side.
        remote = ["--server", base, "--token", admin]
        run([patchgate, "keys", "generate", "--product", "pump-x1", "--out", "pump-x1.pem"], base_env, work,
            "the manufacturer's product key")
        run([patchgate, "product", "create", *remote, "--name", "pump-x1", "--hardware-id", "rev-a",
             "--key", "pump-x1.pem"], base_env, work, "a manufacturer-signed product")
        run([patchgate, "repo", "prepare", *remote, "--out", "targets.json", "delegations"], base_env, work,
            "the delegation ceremony: prepare")
        run([patchgate, "repo", "sign", "--yes", "--key", str(work / "keys/offline/image-targets.pem"),
             "targets.json"], base_env, work, "the delegation ceremony: the targets holder signs, offline")
        run([patchgate, "repo", "submit", *remote, "targets.json"], base_env, work,
            "the delegation ceremony: submit")
        firmware = os.urandom(6 * 1024 * 1024 + 123)
        (work / "fw.bin").write_bytes(firmware)
        run([patchgate, "release", "publish", *remote, "--product", "pump-x1", "--version", "1.0.0",
             "--key", "pump-x1.pem", "fw.bin"], base_env, work, "a 6 MiB release, signed by the manufacturer")
        sha256 = hashlib.sha256(firmware).hexdigest()
        status, downloaded = http("GET", f"{base}/repo/targets/pump-x1/1.0.0/{sha256}.fw.bin")
        expect(status == 200 and downloaded == firmware, "the release downloads byte for byte from the S3 store")
        status, _ = http("GET", f"{base}/repo/metadata/timestamp.json")
        expect(status == 200, "the image repository's timestamp is served")

        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        expect(code == 0, f"SIGTERM: the server drains and exits 0 (exit {code})")
        server = None
    finally:
        if server is not None:
            server.kill()
            server.wait()
        s3.stdin.close()
        try:
            s3.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s3.kill()
        subprocess.run(["psql", postgres, "-qc", f"DROP DATABASE IF EXISTS {database}"],
                       env=base_env, capture_output=True)
        if PROBLEMS:
            print(f"     (kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "debug")
    parser.add_argument("--postgres", default=os.environ.get("PATCHGATE_TEST_POSTGRES_URL",
                                                             "postgres://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    print("== docker-compose.yml against the key model")
    compose = check_file(ROOT / "docker-compose.yml")
    print("== the same sequence natively (PostgreSQL, moto for MinIO, keys/online only on the server)")
    native_sequence(args.bin_dir.resolve(), args.postgres, compose)
    print(f"check-compose: {'PASS' if not PROBLEMS else f'FAIL ({len(PROBLEMS)} problems)'}")
    return 0 if not PROBLEMS else 1


if __name__ == "__main__":
    sys.exit(main())
