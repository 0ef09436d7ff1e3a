//! Mutation fuzzing on stable Rust, for every crate of the workspace (feature `fuzzing`).
//!
//! A fuzz target starts from a corpus of real inputs kept in the repository
//! (`fuzz/corpus/{target}/`, one file each) and feeds the code under test with those inputs after
//! random byte- and JSON-aware mutations: bit flips, bytes JSON cares about, deleted, repeated
//! and spliced ranges, truncations, numbers and strings at their limits. proptest drives it, so
//! a failure shrinks to the fewest mutations that still fail and is printed as a file under
//! `fuzz/artifacts/` to add to the corpus. Runs are seeded: the same seed and case count replay
//! the same inputs (`PATCHGATE_FUZZ_SEED`, `PATCHGATE_FUZZ_CASES`).
//!
//! Not coverage-guided (that takes a nightly toolchain and an instrumented build of every
//! dependency); the corpus and the mutations are chosen to reach the parsers' edges instead.

#![allow(clippy::panic, reason = "test support: a fuzz target fails by panicking, like a test")]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Cases per target unless `PATCHGATE_FUZZ_CASES` says otherwise.
pub const DEFAULT_CASES: u32 = 2_000;
/// The seed unless `PATCHGATE_FUZZ_SEED` says otherwise (64 hex digits at most).
const DEFAULT_SEED: &str = "70617463686761746520667a7a";

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flip one bit at a position (taken modulo the length).
    FlipBit(usize, u8),
    /// Overwrite one byte with a byte JSON parsers care about.
    Set(usize, u8),
    /// Insert bytes at a position.
    Insert(usize, Vec<u8>),
    /// Delete up to `len` bytes from a position.
    Delete(usize, usize),
    /// Repeat a range in place (`"a":1` twice: duplicate keys, nesting).
    Repeat(usize, usize),
    /// Cut the input short.
    Truncate(usize),
    /// Replace the token at a position (up to the next delimiter) with an edge value.
    Token(usize, &'static str),
    /// Splice in a range of another corpus input.
    Splice(usize, usize, usize, usize),
}

/// Bytes that change a JSON document's structure.
const STRUCTURAL: &[u8] = b"{}[]\",:\\ 0-1e.+tfn\x00\x7f\x80\xc3\xff\n";

/// Values at the limits of what the parsers and the checks after them accept.
const EDGE_TOKENS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1.5",
    "1e999",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "-9223372036854775809",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\u{feff}x\"",
    "\"../../etc/passwd\"",
    "\"2026-13-45T99:99:99Z\"",
    "\"0000000000000000000000000000000000000000000000000000000000000000\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<usize>(), proptest::sample::select(STRUCTURAL)).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Repeat(at, len)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::sample::select(EDGE_TOKENS)).prop_map(|(at, t)| Mutation::Token(at, t)),
        (any::<usize>(), any::<usize>(), any::<usize>(), 1usize..128)
            .prop_map(|(from, at, start, len)| Mutation::Splice(from, at, start, len)),
    ]
}

fn is_delimiter(b: u8) -> bool {
    b" \n\t,:{}[]".contains(&b)
}

/// Applies `m` to `input`; `corpus` supplies splices.
pub fn apply(input: &mut Vec<u8>, m: &Mutation, corpus: &[Vec<u8>]) {
    let n = input.len();
    let pos = |at: usize| if n == 0 { 0 } else { at % n };
    match m {
        Mutation::FlipBit(at, bit) if n > 0 => input[pos(*at)] ^= 1 << bit,
        Mutation::Set(at, b) if n > 0 => input[pos(*at)] = *b,
        Mutation::Insert(at, bytes) => {
            let at = if n == 0 { 0 } else { at % (n + 1) };
            input.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete(at, len) if n > 0 => {
            let at = pos(*at);
            input.drain(at..(at + len).min(n));
        }
        Mutation::Repeat(at, len) if n > 0 => {
            let at = pos(*at);
            let copy = input[at..(at + len).min(n)].to_vec();
            input.splice(at..at, copy);
        }
        Mutation::Truncate(at) => input.truncate(if n == 0 { 0 } else { at % n }),
        Mutation::Token(at, token) if n > 0 => {
            let start = pos(*at);
            let end = input[start..].iter().position(|b| is_delimiter(*b)).map_or(n, |i| start + i.max(1));
            input.splice(start..end, token.bytes());
        }
        Mutation::Splice(from, at, start, len) if !corpus.is_empty() => {
            let other = &corpus[from % corpus.len()];
            if !other.is_empty() {
                let start = start % other.len();
                let piece = other[start..(start + len).min(other.len())].to_vec();
                let at = if n == 0 { 0 } else { at % (n + 1) };
                input.splice(at..at, piece);
            }
        }
        _ => {}
    }
}

/// An input from the corpus: which one, and the input after the mutations.
#[derive(Debug, Clone)]
pub struct Mutated {
    /// Index into the corpus.
    pub origin: usize,
    /// The mutated bytes.
    pub bytes: Vec<u8>,
}

/// Inputs made from `corpus`: unchanged ones too (a mutation list may be empty).
pub fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Mutated> {
    let shared = std::sync::Arc::new(corpus);
    let len = shared.len().max(1);
    (0..len, proptest::collection::vec(mutation(), 0..6)).prop_map(move |(origin, mutations)| {
        let mut bytes = shared.get(origin).cloned().unwrap_or_default();
        for m in &mutations {
            apply(&mut bytes, m, &shared);
        }
        Mutated { origin, bytes }
    })
}

/// The directory of the workspace's fuzz corpora and artifacts.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz")
}

/// Every file of `fuzz/corpus/{target}/`, sorted by name; panics if there are none (a target
/// without a corpus would fuzz nothing but random bytes).
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> =
        files.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))).collect();
    assert!(!inputs.is_empty(), "the corpus {} is empty", dir.display());
    inputs
}

fn seed() -> [u8; 32] {
    let hex = std::env::var("PATCHGATE_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    let mut seed = [0u8; 32];
    for (i, b) in hex.bytes().take(64).enumerate() {
        let nibble = (b as char).to_digit(16).unwrap_or(0) as u8;
        seed[i / 2] |= nibble << (if i % 2 == 0 { 4 } else { 0 });
    }
    seed
}

/// How many cases a target of cheap checks runs (`PATCHGATE_FUZZ_CASES`, or [`DEFAULT_CASES`]);
/// targets that cost a request each run a fraction.
pub fn cases() -> u32 {
    std::env::var("PATCHGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// Runs `check` on `cases` inputs from `strategy` (usually [`cases()`]), seeded; `check` says what is wrong with an
/// input's outcome, and a panic fails too. On a failure, writes the shrunk input to
/// `fuzz/artifacts/{target}-failure` and panics with the error.
pub fn run<S>(target: &str, cases: u32, strategy: S, check: impl Fn(&S::Value) -> Result<(), String>)
where
    S: Strategy,
    S::Value: AsBytes,
{
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed()));
    // proptest catches a panic as a failure like any other, and shrinks it.
    let result = runner.run(&strategy, |value| check(&value).map_err(TestCaseError::fail));
    if let Err(e) = result {
        if let proptest::test_runner::TestError::Fail(_, value) = &e {
            let dir = fuzz_dir().join("artifacts");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{target}-failure")), value.as_bytes());
        }
        panic!("fuzz target {target} failed: {e}");
    }
}

/// The bytes of a generated input, to write out on failure.
pub trait AsBytes {
    /// The input as bytes.
    fn as_bytes(&self) -> Vec<u8>;
}

impl AsBytes for Mutated {
    fn as_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

impl AsBytes for serde_json::Value {
    fn as_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl AsBytes for (serde_json::Value, serde_json::Value) {
    fn as_bytes(&self) -> Vec<u8> {
        serde_json::Value::Array(vec![self.0.clone(), self.1.clone()]).to_string().into_bytes()
    }
}

/// Arbitrary JSON without floats (canonical JSON has none): nested objects and arrays, integers
/// at their limits, strings with escapes and non-ASCII.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        proptest::sample::select(&["", "\"", "\\", "\u{0}", "\u{1f}", "\u{7f}", "é", "\u{2028}", "💉"][..])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
