#!/usr/bin/env python3
"""Runs the README's walkthroughs, so that a README that drifts from the code fails CI.

Every ```sh and ```python block in the README must be preceded by a marker line:

    <!-- check: GROUP -->            run this block, in order with the other blocks of GROUP
    <!-- check: skip: REASON -->     not run (a synopsis, a slow build, ...); the reason is required

An unmarked block is an error, so a new block cannot be forgotten. Each group runs in a fresh
temporary directory holding a copy of keys-example/ (as a checkout would), as ONE bash script
(`set -euo pipefail`): a command that fails stops the group and the check names the README line
of its block. Python blocks run with the given Python (python-tuf installed) at their place in
the sequence. What the check changes, and nothing else:
  - `patchgate` and `patchgate-agent` are the binaries of --bin-dir (first on PATH), and
    `cargo run [-q] [--] ARGS` runs `patchgate ARGS` (any other cargo command is refused);
  - `127.0.0.1:8080` becomes a free loopback port (PATCHGATE_LISTEN is set to it), so the
    check never collides with a server already on 8080;
  - PATCHGATE_* variables of the calling shell are removed.
A group's processes (a server started with `&`) are killed when it ends.

--first-block-runs GROUP=N also runs the first block of GROUP alone N more times, each in a fresh
directory: the README's first block is what a newcomer pastes into a shell, and a race in it
(a command that starts before the server is ready) shows only now and then.

Usage: check-readme.py --bin-dir DIR [--python PY] [--readme README.md] [--keep]
                       [--first-block-runs GROUP=N]
       check-readme.py --self-test     (shows that a failing or unmarked block fails the check)
Exits 0 when every group passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!--\s*check:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
GROUP_TIMEOUT_SECONDS = 300


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    text: str


@dataclass
class Group:
    name: str
    blocks: list[Block] = field(default_factory=list)


def parse(readme: Path) -> tuple[list[Group], list[str]]:
    """The groups in order of first appearance, and the problems found (unmarked blocks...)."""
    groups: dict[str, Group] = {}
    problems: list[str] = []
    lines = readme.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence or not fence.group(1):
            i += 1
            continue
        lang, start = fence.group(1), i
        end = start + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            problems.append(f"{readme.name}:{start + 1}: a ``` block is never closed")
            break
        i = end + 1
        if lang not in ("sh", "bash", "python"):
            continue
        marker = MARKER.match(lines[start - 1]) if start > 0 else None
        where = f"{readme.name}:{start + 1}"
        if not marker:
            problems.append(
                f"{where}: a ```{lang} block without a marker line above it: "
                "add <!-- check: GROUP --> to run it or <!-- check: skip: REASON -->"
            )
            continue
        spec = marker.group(1)
        if spec.startswith("skip"):
            if not spec.removeprefix("skip").strip(" :"):
                problems.append(f"{where}: <!-- check: skip --> needs a reason (skip: REASON)")
            continue
        if not re.fullmatch(r"[a-z0-9-]+", spec):
            problems.append(f"{where}: the group name {spec!r} must be lowercase letters, digits and '-'")
            continue
        text = "\n".join(lines[start + 1 : end]) + "\n"
        groups.setdefault(spec, Group(spec)).blocks.append(Block(start + 1, lang, text))
    return list(groups.values()), problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_script(group: Group, readme: Path, work: Path, port: int, python: str) -> str:
    """One bash script running the group's blocks in order, each announced on stderr."""
    out = [
        "set -euo pipefail",
        'cargo() {  # cargo run [-q] [--] ARGS runs the patchgate binary under test',
        '    [[ ${1:-} == run ]] || { echo "check-readme: \'cargo $*\' is not run by the README check" >&2; return 2; }',
        "    shift",
        '    while [[ ${1:-} == -q || ${1:-} == --quiet ]]; do shift; done',
        '    [[ ${1:-} == -- ]] && shift',
        '    patchgate "$@"',
        "}",
    ]
    for n, block in enumerate(group.blocks):
        text = block.text.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        # A newline first: the previous block's output may not end with one (curl's JSON).
        out.append(f"printf '\\n== %s\\n' '{readme.name}:{block.line} ({group.name})' >&2")
        if block.lang == "python":
            path = work / f".readme-block-{n}.py"
            path.write_text(text)
            out.append(f"{python!s} {path.name}")
        else:
            out.append(text)
    return "\n".join(out) + "\n"


def run_group(group: Group, readme: Path, bin_dir: Path, python: str, keep: bool) -> bool:
    work = Path(tempfile.mkdtemp(prefix=f"readme-{group.name}."))
    port = free_port()
    shutil.copytree(ROOT / "keys-example", work / "keys-example")
    tools = work / ".bin"
    tools.mkdir()
    for name in ("patchgate", "patchgate-agent"):
        binary = bin_dir / name
        if not os.access(binary, os.X_OK):
            print(f"check-readme: {binary} is missing; build it first (cargo test --workspace builds both)")
            return False
        (tools / name).symlink_to(binary)
    script = work / ".readme-check.sh"
    script.write_text(group_script(group, readme, work, port, python))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHGATE_")}
    env.update(PATH=f"{tools}{os.pathsep}{env.get('PATH', '')}", PATCHGATE_LISTEN=f"127.0.0.1:{port}", NO_COLOR="1")
    log_path = work / ".readme-check.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(script)], cwd=work, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            code = proc.wait(timeout=GROUP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:  # the group's background processes (its server) end with it
                os.killpg(proc.pid, signal.SIGTERM)
                time.sleep(0.3)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    seconds = time.monotonic() - started
    log_text = log_path.read_text(errors="replace")
    ok = code == 0
    if ok:
        print(f"PASS {group.name}: {len(group.blocks)} block(s) in {seconds:.1f} s")
    else:
        blocks = re.findall(r"^== (\S+:\d+) ", log_text, flags=re.M)
        where = blocks[-1] if blocks else "before the first block"
        why = f"timed out after {GROUP_TIMEOUT_SECONDS} s" if code is None else f"exit status {code}"
        print(f"FAIL {group.name}: the block at {where} failed ({why}); the group's output, last 40 lines:")
        for line in log_text.splitlines()[-40:]:
            print(f"    {line}")
    if keep or not ok:
        print(f"     (kept {work})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return ok


def check(readme: Path, bin_dir: Path, python: str, keep: bool, first_block_runs: dict[str, int]) -> int:
    groups, problems = parse(readme)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return 1
    if not groups:
        print(f"FAIL {readme}: no block is marked to run")
        return 1
    results = [run_group(g, readme, bin_dir, python, keep) for g in groups]
    for name, runs in first_block_runs.items():
        group = next((g for g in groups if g.name == name), None)
        if group is None:
            print(f"FAIL --first-block-runs: the README has no group {name!r}")
            results.append(False)
            continue
        first = Group(name=f"{name}-first-block", blocks=group.blocks[:1])
        passed = sum(run_group(first, readme, bin_dir, python, keep) for _ in range(runs))
        print(f"{'PASS' if passed == runs else 'FAIL'} the first block of {name} "
              f"({readme.name}:{first.blocks[0].line}) alone: {passed} of {runs} runs passed")
        results.append(passed == runs)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


def self_test(bin_dir: Path) -> int:
    """The check must fail on a failing command and on an unmarked block, naming the line."""
    cases = {
        "a failing command": (
            "<!-- check: t -->\n```sh\ntrue\n```\n\n<!-- check: t -->\n```sh\npatchgate no-such-command\n```\n",
            "README.md:7",
        ),
        "an unmarked block": ("```sh\ntrue\n```\n", "README.md:1"),
        "a skip without a reason": ("<!-- check: skip -->\n```sh\ntrue\n```\n", "README.md:2"),
    }
    failures = 0
    with tempfile.TemporaryDirectory(prefix="readme-self-test.") as tmp:
        for what, (text, line) in cases.items():
            readme = Path(tmp) / "README.md"
            readme.write_text(text)
            proc = subprocess.run(
                [sys.executable, __file__, "--readme", str(readme), "--bin-dir", str(bin_dir)],
                capture_output=True, text=True,
            )
            if proc.returncode != 0 and line in proc.stdout:
                print(f"PASS self-test: {what} fails the check at {line}")
            else:
                failures += 1
                print(f"FAIL self-test: {what} did not fail the check at {line}:\n{proc.stdout}{proc.stderr}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "debug")
    parser.add_argument("--python", default=sys.executable, help="runs the ```python blocks")
    parser.add_argument("--keep", action="store_true", help="keep every group's directory")
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--first-block-runs", action="append", default=[], metavar="GROUP=N",
                        help="run GROUP's first block alone N more times, each in a fresh directory")
    args = parser.parse_args()
    first_block_runs: dict[str, int] = {}
    for spec in args.first_block_runs:
        name, _, runs = spec.partition("=")
        if not name or not runs.isdigit() or int(runs) < 1:
            parser.error(f"--first-block-runs {spec!r}: expected GROUP=N with N at least 1")
        first_block_runs[name] = int(runs)
    bin_dir = args.bin_dir.resolve()
    if args.self_test:
        return self_test(bin_dir)
    python = os.path.abspath(args.python) if os.sep in args.python else args.python  # groups run elsewhere
    return check(args.readme.resolve(), bin_dir, python, args.keep, first_block_runs)


if __name__ == "__main__":
    sys.exit(main())
