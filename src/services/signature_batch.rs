//! Device signatures checked in batches: the one CPU cost every report pays.
//!
//! Report handlers hand (message, signature, key) to one checking thread and wait for its
//! verdict. The thread takes whatever has queued up, at most [`MAX_BATCH`]; one item is checked
//! with `verify_strict`, several with ed25519 batch verification, which costs less per signature
//! (one multiscalar multiplication for the whole batch). A batch that fails is checked again
//! one by one with `verify_strict`, so a bad signature is refused to its sender only; it costs
//! the others of its batch at most one batch check of extra time. Under light load every batch
//! is one item and nothing waits; under heavy load the queue makes the batches.
//!
//! What a batch accepts: batch verification checks the cofactored equation, which a strict
//! single check does not (a signature whose `R` carries a small-order component passes the
//! first, not the second). Either way only the holder of the device's private key can make a
//! signature that passes, provided the key is not of small order, which is refused here (and at
//! enrollment, whose single check is strict). So a batch never accepts a forgery; it may accept
//! a signature the device made in a non-standard way, over the very message it signed.

use std::sync::mpsc;

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::oneshot;

/// The most signatures one batch checks (ed25519-dalek's gain flattens out well before this).
const MAX_BATCH: usize = 64;

struct Job {
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
    verdict: oneshot::Sender<bool>,
}

/// The handle of the checking thread; cheap to clone.
#[derive(Clone)]
pub struct SignatureBatcher {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for SignatureBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureBatcher")
    }
}

impl SignatureBatcher {
    /// Starts the checking thread; it ends when the last handle is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("signature-batch".into()).spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                check(batch);
            }
        })?;
        Ok(Self { jobs })
    }

    /// Whether `signature` is `key`'s over `message` (see the module's note on what a batch
    /// accepts).
    pub async fn verify(&self, message: &[u8], signature: Signature, key: VerifyingKey) -> bool {
        if key.is_weak() {
            return false;
        }
        let (verdict, answer) = oneshot::channel();
        let job = Job { message: message.to_vec(), signature, key, verdict };
        if self.jobs.send(job).is_err() {
            // The thread is gone (a panic): check here rather than refuse every device.
            return key.verify_strict(message, &signature).is_ok();
        }
        answer.await.unwrap_or(false)
    }
}

/// Checks `batch` and answers every job in it.
fn check(batch: Vec<Job>) {
    let batch_holds = batch.len() > 1 && {
        let messages: Vec<&[u8]> = batch.iter().map(|j| j.message.as_slice()).collect();
        let signatures: Vec<Signature> = batch.iter().map(|j| j.signature).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|j| j.key).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    metrics::counter!("patchgate_signature_batches_total", "outcome" => if batch_holds { "held" } else { "single" })
        .increment(1);
    for job in batch {
        let ok = batch_holds || job.key.verify_strict(&job.message, &job.signature).is_ok();
        // The request may have gone away; its verdict is then no one's business.
        let _ = job.verdict.send(ok);
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use rand_core::OsRng;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_signature_in_a_batch_refuses_only_its_sender() {
        let batcher = SignatureBatcher::start().unwrap();
        let keys: Vec<SigningKey> = (0..200).map(|_| SigningKey::generate(&mut OsRng)).collect();
        let mut checks = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            let message = format!("report {n}").into_bytes();
            // Every seventh signs another message: its check must fail, and only it.
            let signed = if n % 7 == 3 { b"something else".to_vec() } else { message.clone() };
            let signature = key.sign(&signed);
            let batcher = batcher.clone();
            let public = key.verifying_key();
            checks.push(tokio::spawn(async move { (n, batcher.verify(&message, signature, public).await) }));
        }
        for check in checks {
            let (n, ok) = check.await.unwrap();
            assert_eq!(ok, n % 7 != 3, "signature {n}");
        }
    }

    #[test]
    fn one_batch_with_a_bad_signature_answers_each_job_on_its_own_merit() {
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for n in 0..MAX_BATCH {
            let key = SigningKey::generate(&mut OsRng);
            let message = format!("report {n}").into_bytes();
            let signature = if n == 17 { key.sign(b"another report") } else { key.sign(&message) };
            let (verdict, answer) = oneshot::channel();
            batch.push(Job { message, signature, key: key.verifying_key(), verdict });
            answers.push(answer);
        }
        check(batch);
        for (n, mut answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.try_recv().unwrap(), n != 17, "job {n}");
        }
        // And a batch of good ones holds as a batch.
        let key = SigningKey::generate(&mut OsRng);
        let (verdict, mut answer) = oneshot::channel();
        let (verdict2, mut answer2) = oneshot::channel();
        let job =
            |m: &[u8], verdict| Job { message: m.to_vec(), signature: key.sign(m), key: key.verifying_key(), verdict };
        check(vec![job(b"a", verdict), job(b"b", verdict2)]);
        assert!(answer.try_recv().unwrap() && answer2.try_recv().unwrap());
    }

    #[tokio::test]
    async fn a_small_order_key_is_refused() {
        // The identity point's encoding: a key of small order, for which anything "verifies"
        // under the cofactored equation.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = VerifyingKey::from_bytes(&identity).unwrap();
        let signature = Signature::from_bytes(&[0u8; 64]);
        assert!(!SignatureBatcher::start().unwrap().verify(b"anything", signature, key).await);
    }
}
