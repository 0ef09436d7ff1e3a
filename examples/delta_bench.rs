//! The delta benchmark's measuring tool (scripts/bench-delta.sh runs it; not part of CI).
//!
//! - `delta_bench encode OLD NEW OUT`: computes the delta from both images in memory
//!   (`patchgate::domain::delta::encode`), writes it to OUT and prints one line of JSON: the
//!   algorithm kept, the delta's size, the seconds it took, each format's size, the size of NEW
//!   compressed the same way, and the process's peak resident memory (VmHWM).
//! - `delta_bench compute OLD NEW OUT`: computes the delta exactly as the server does, with the
//!   images read a window at a time (`patchgate::services::delta_compute::compute`; the same
//!   bytes as `encode`), writes it to OUT and prints the algorithm, the delta's size, the seconds
//!   it took and the process's peak resident memory (VmHWM): the server's memory for one delta.
//! - `delta_bench apply ALGORITHM DELTA OLD NEW OUT`: applies DELTA to OLD as the agent does
//!   (`patchgate_agent::delta::apply`), requires OUT to equal NEW byte for byte (by length and
//!   hashes), and prints the seconds it took and the process's peak resident memory (VmHWM).
//! - `delta_bench synth OLD NEW MIB`: writes two MIB-MiB files that differ as a patch release
//!   does (pseudo-random bytes with scattered edits, an insertion and a deletion), for the
//!   device memory check on a large image.

use std::path::Path;
use std::time::Instant;

use sha2::Digest;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["encode", old, new, out] => encode(old, new, out),
        ["compute", old, new, out] => compute(old, new, out),
        ["apply", algorithm, delta, old, new, out] => apply(algorithm, delta, old, new, out),
        ["synth", old, new, mib] => synth(old, new, mib),
        _ => {
            Err("usage: delta_bench encode|compute OLD NEW OUT | apply ALGORITHM DELTA OLD NEW OUT | synth OLD NEW MIB"
                .into())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delta_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Result = std::result::Result<(), String>;

fn read(path: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn encode(old: &str, new: &str, out: &str) -> Result {
    use patchgate::domain::delta;
    let (old, new) = (read(old)?, read(new)?);
    let started = Instant::now();
    let chosen = delta::encode(&old, &new).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    // Each format alone, for the table (not timed).
    let bsdiff = delta::encode_bsdiff_zstd(&old, &new).map_err(|e| e.to_string())?.len();
    let limit = patchgate_protocol::delta::ZSTD_PATCH_MAX_IMAGE;
    let zstd_patch = if old.len() as u64 <= limit && new.len() as u64 <= limit {
        delta::encode_zstd_patch(&old, &new).map_err(|e| e.to_string())?.len().to_string()
    } else {
        "null".to_owned()
    };
    let full = delta::compressed_len(&new).map_err(|e| e.to_string())?;
    std::fs::write(out, &chosen.bytes).map_err(|e| format!("{out}: {e}"))?;
    println!(
        r#"{{"algorithm":"{}","delta_bytes":{},"encode_seconds":{seconds:.3},"bsdiff_zstd_bytes":{bsdiff},"zstd_patch_bytes":{zstd_patch},"full_zstd_bytes":{full},"peak_rss_kib":{}}}"#,
        chosen.algorithm,
        chosen.bytes.len(),
        peak_rss_kib()?
    );
    Ok(())
}

fn compute(old: &str, new: &str, out: &str) -> Result {
    use std::os::unix::fs::FileExt;
    let open = |path: &str| std::fs::File::open(path).map_err(|e| format!("{path}: {e}"));
    let (old_file, new_file) = (open(old)?, open(new)?);
    let len = |f: &std::fs::File| f.metadata().map(|m| m.len()).map_err(|e| e.to_string());
    let (old_len, new_len) = (len(&old_file)?, len(&new_file)?);
    let reader = |file: std::fs::File| {
        move |range: std::ops::Range<u64>| {
            let mut buf = vec![0; usize::try_from(range.end - range.start).unwrap_or(0)];
            file.read_exact_at(&mut buf, range.start).map(|()| buf)
        }
    };
    let started = Instant::now();
    let mut computed =
        patchgate::services::delta_compute::compute(old_len, new_len, reader(old_file), reader(new_file))
            .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let mut file = std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?;
    std::io::copy(&mut computed.file, &mut file).map_err(|e| format!("{out}: {e}"))?;
    println!(
        r#"{{"algorithm":"{}","delta_bytes":{},"encode_seconds":{seconds:.3},"full_zstd_bytes":{},"peak_rss_kib":{}}}"#,
        computed.algorithm,
        computed.length,
        computed.full_compressed,
        peak_rss_kib()?
    );
    Ok(())
}

fn apply(algorithm: &str, delta: &str, old: &str, new: &str, out: &str) -> Result {
    let expected = {
        let mut file = std::fs::File::open(new).map_err(|e| format!("{new}: {e}"))?;
        let mut sha256 = sha2::Sha256::new();
        let mut sha512 = sha2::Sha512::new();
        let mut length = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| format!("{new}: {e}"))?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else { break };
            sha256.update(chunk);
            sha512.update(chunk);
            length += n as u64;
        }
        patchgate_agent::download::SignedFile {
            name: "bench/1.0.1/image".into(),
            length,
            sha256: hex::encode(sha256.finalize()),
            sha512: Some(hex::encode(sha512.finalize())),
        }
    };
    // The expected hashes are computed before the clock starts, so only the agent's work (and
    // not hashing NEW here) counts in the time and the peak memory measured below is the
    // apply's (the hashing above uses a 1 MiB buffer).
    let started = Instant::now();
    let length = std::fs::metadata(old).map_err(|e| format!("{old}: {e}"))?.len();
    let source = patchgate_agent::delta::Source { path: Path::new(old), length };
    patchgate_agent::delta::apply(algorithm, Path::new(delta), source, Path::new(out), &expected)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(r#"{{"apply_seconds":{seconds:.3},"peak_rss_kib":{}}}"#, peak_rss_kib()?);
    Ok(())
}

/// This process's peak resident memory (VmHWM), KiB.
fn peak_rss_kib() -> std::result::Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0))
}

fn synth(old: &str, new: &str, mib: &str) -> Result {
    let mib: usize = mib.parse().map_err(|e| format!("MIB {mib:?}: {e}"))?;
    let n = mib * 1024 * 1024;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut a = Vec::with_capacity(n);
    while a.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        a.extend_from_slice(&x.to_le_bytes());
    }
    a.truncate(n);
    let mut b = a.clone();
    for i in (4096..n).step_by(1 << 20) {
        b[i] ^= 0x5a;
    }
    b.splice(n / 3..n / 3, std::iter::repeat_n(7u8, 4096));
    b.drain(2 * n / 3..2 * n / 3 + 4096);
    std::fs::write(old, &a).map_err(|e| format!("{old}: {e}"))?;
    std::fs::write(new, &b).map_err(|e| format!("{new}: {e}"))?;
    Ok(())
}
