#!/usr/bin/env bash
# Benchmark of delta targets (not run in CI).
#
# Fetches consecutive releases of real binaries from the package registries (cached under
# target/bench-delta/), then for each pair prints the size and time of:
#   - patchgate's delta as the server computes it (examples/delta_bench.rs): bsdiff-zstd, and
#     zstd-patch too for images up to 16 MiB, the smaller kept; each format's size is shown;
#   - bsdiff, xdelta3 -9 and `zstd -19 --patch-from` on the same pair (the anchors; installed
#     with apt-get if missing);
#   - the new image compressed with zstd -19 (what a delta must beat by 30 % to be published);
# and the ratio of patchgate's delta to the smallest anchor (goal: <= 1.05), and whether the
# server would publish it (at most 70 % of the zstd -19 image). patchgate's delta is also applied
# as the device agent applies it and checked byte for byte against the new image. Finally a
# synthetic pair of SYNTH_MIB MiB (default 256) is made and its delta computed and applied, with
# the peak resident memory of the computing process (as the server does it) and of the applying
# one (as the agent does it; goal: < 64 MiB).
#
# Pairs (x86_64 Linux builds):
#   orjson 3.10.11 -> 3.10.12        the extension module (.so, Rust), PyPI, about 0.25 MB
#   rollup 4.28.0 -> 4.28.1          the native module (.node, Rust), npm, about 2.5 MB
#   pydantic-core 2.27.1 -> 2.27.2   the extension module (.so, Rust), PyPI, about 5 MB
#   lightningcss 1.28.1 -> 1.28.2    the native module (.node, Rust), npm, about 9.5 MB
#   esbuild 0.24.0 -> 0.24.1         the executable (Go), npm, about 10 MB
#
# Usage:  scripts/bench-delta.sh
# Environment:
#   SYNTH_MIB     size of the synthetic pair in MiB (default 256; 0 skips it)
#   BENCH_TMPDIR  where to create the temporary directory (default $TMPDIR or /tmp)
set -euo pipefail

SYNTH_MIB=${SYNTH_MIB:-256}
SIZE_GOAL=1.05
RSS_GOAL_MIB=64

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=$repo/target/bench-delta
tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/patchgate-bench-delta.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

missing=()
for tool in bsdiff:bsdiff xdelta3:xdelta3 zstd:zstd unzip:unzip; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    apt-get install -y "${missing[@]}" >&2 || { apt-get update >&2 && apt-get install -y "${missing[@]}" >&2; } ||
        { echo "cannot install ${missing[*]}" >&2; exit 1; }
fi

echo "building examples/delta_bench (release)…" >&2
(cd "$repo" && cargo build --release --example delta_bench --quiet)
tool=$repo/target/release/examples/delta_bench

# fetch_pypi NAME VERSION GLOB OUT: the file matching GLOB inside NAME's cp311 manylinux wheel.
fetch_pypi() {
    local name=$1 version=$2 glob=$3 out=$4
    [[ -s $out ]] && return
    local dir=$tmp/dl-$name-$version
    mkdir -p "$dir"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_17_x86_64 "$name==$version" -d "$dir" >&2
    unzip -q -o -j "$dir"/*.whl "$glob" -d "$dir/x"
    mv "$dir"/x/* "$out"
}

# fetch_npm PACKAGE VERSION PATH OUT: PATH inside the npm package's tarball.
fetch_npm() {
    local package=$1 version=$2 path=$3 out=$4
    [[ -s $out ]] && return
    local dir=$tmp/dl-npm-${package//[@\/]/_}-$version
    mkdir -p "$dir"
    (cd "$dir" && npm pack -q "$package@$version" >/dev/null 2>&1)
    tar xzf "$dir"/*.tgz -C "$dir" "package/$path"
    mv "$dir/package/$path" "$out"
}

mkdir -p "$cache"
echo "fetching the pairs into $cache…" >&2
fetch_pypi orjson 3.10.11 'orjson/orjson*.so' "$cache/orjson-3.10.11.so"
fetch_pypi orjson 3.10.12 'orjson/orjson*.so' "$cache/orjson-3.10.12.so"
fetch_pypi pydantic-core 2.27.1 'pydantic_core/_pydantic_core*.so' "$cache/pydantic-core-2.27.1.so"
fetch_pypi pydantic-core 2.27.2 'pydantic_core/_pydantic_core*.so' "$cache/pydantic-core-2.27.2.so"
fetch_npm @esbuild/linux-x64 0.24.0 bin/esbuild "$cache/esbuild-0.24.0"
fetch_npm @esbuild/linux-x64 0.24.1 bin/esbuild "$cache/esbuild-0.24.1"
fetch_npm @rollup/rollup-linux-x64-gnu 4.28.0 rollup.linux-x64-gnu.node "$cache/rollup-4.28.0.node"
fetch_npm @rollup/rollup-linux-x64-gnu 4.28.1 rollup.linux-x64-gnu.node "$cache/rollup-4.28.1.node"
fetch_npm lightningcss-linux-x64-gnu 1.28.1 lightningcss.linux-x64-gnu.node "$cache/lightningcss-1.28.1.node"
fetch_npm lightningcss-linux-x64-gnu 1.28.2 lightningcss.linux-x64-gnu.node "$cache/lightningcss-1.28.2.node"

# timed OUTFILE CMD...: runs CMD, prints "SIZE SECONDS" of OUTFILE and the run.
timed() {
    local out=$1
    shift
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "$(stat -c %s "$out") $(echo "$end - $start" | bc)"
}

json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

printf '\n| pair | new image | zstd -19 (full) | bsdiff | xdelta3 -9 | zstd -19 --patch-from | patchgate: bsdiff-zstd / zstd-patch | kept | ratio to smallest anchor | published | apply (agent) |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for pair in orjson:3.10.11:3.10.12:.so rollup:4.28.0:4.28.1:.node pydantic-core:2.27.1:2.27.2:.so \
    lightningcss:1.28.1:1.28.2:.node esbuild:0.24.0:0.24.1:; do
    IFS=: read -r name from to ext <<<"$pair"
    old=$cache/$name-$from$ext
    new=$cache/$name-$to$ext
    read -r bsd_size bsd_s < <(timed "$tmp/p.bsdiff" bsdiff "$old" "$new" "$tmp/p.bsdiff")
    read -r xd_size xd_s < <(timed "$tmp/p.xd3" xdelta3 -e -9 -f -s "$old" "$new" "$tmp/p.xd3")
    read -r zpf_size zpf_s < <(timed "$tmp/p.zst" zstd -q -19 -f --patch-from="$old" "$new" -o "$tmp/p.zst")
    zstd -q -19 -f "$new" -o "$tmp/full.zst"
    full=$(stat -c %s "$tmp/full.zst")
    ours=$("$tool" encode "$old" "$new" "$tmp/p.pg")
    our_size=$(json "$ours" delta_bytes)
    our_s=$(json "$ours" encode_seconds)
    algorithm=$(json "$ours" algorithm)
    applied=$("$tool" apply "$algorithm" "$tmp/p.pg" "$old" "$new" "$tmp/out")
    smallest=$(printf '%s\n' "$bsd_size" "$xd_size" "$zpf_size" | sort -n | head -1)
    ratio=$(echo "scale=3; $our_size / $smallest" | bc)
    verdict=OK
    if (($(echo "$ratio > $SIZE_GOAL" | bc))); then verdict=MISS; fi
    share=$(echo "scale=1; 100 * $our_size / $(json "$ours" full_zstd_bytes)" | bc)
    published="yes ($share % of the image)"
    if (($(echo "$share > 70" | bc))); then published="no: $share % of the image"; fi
    printf '| %s %s → %s | %s | %s | %s (%.2f s) | %s (%.2f s) | %s (%.2f s) | %s / %s | %s in %.2f s | %.3f %s | %s | %.2f s |\n' \
        "$name" "$from" "$to" "$(stat -c %s "$new")" "$full" "$bsd_size" "$bsd_s" "$xd_size" "$xd_s" \
        "$zpf_size" "$zpf_s" "$(json "$ours" bsdiff_zstd_bytes)" "$(json "$ours" zstd_patch_bytes)" \
        "$algorithm" "$our_s" "$ratio" "$verdict" "$published" "$(json "$applied" apply_seconds)"
done
printf '\nSizes in bytes; a ratio above %s is a MISS. "published": the server refuses a delta above 70 %% of the compressed image.\n' "$SIZE_GOAL"

if ((SYNTH_MIB > 0)); then
    echo "synthetic pair of $SYNTH_MIB MiB: making it, computing the delta (minutes)…" >&2
    "$tool" synth "$tmp/big-old" "$tmp/big-new" "$SYNTH_MIB"
    # As the server computes it: a window of each image at a time.
    ours=$("$tool" compute "$tmp/big-old" "$tmp/big-new" "$tmp/big.pg")
    applied=$("$tool" apply "$(json "$ours" algorithm)" "$tmp/big.pg" "$tmp/big-old" "$tmp/big-new" "$tmp/big-out")
    rss_kib=$(json "$applied" peak_rss_kib)
    rss_mib=$(echo "scale=1; $rss_kib / 1024" | bc)
    verdict=OK
    if (($(echo "$rss_mib >= $RSS_GOAL_MIB" | bc))); then verdict=MISS; fi
    server_mib=$(echo "scale=1; $(json "$ours" peak_rss_kib) / 1024" | bc)
    printf '\n| synthetic %s MiB image | delta | computed in | server peak RSS computing | applied in | agent peak RSS while applying |\n|---|---|---|---|---|---|\n' "$SYNTH_MIB"
    printf '| %s → edited | %s bytes | %s s | %s MiB | %s s | %s MiB (goal < %s) %s |\n' "$SYNTH_MIB MiB" \
        "$(json "$ours" delta_bytes)" "$(json "$ours" encode_seconds)" "$server_mib" \
        "$(json "$applied" apply_seconds)" "$rss_mib" "$RSS_GOAL_MIB" "$verdict"
fi
