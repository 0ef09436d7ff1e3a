//! Device signatures checked in batches: the one CPU cost every report pays.
//!
//! Report handlers hand (message, signature, key) to one checking thread and wait for its
//! verdict. The thread takes whatever has queued up, at most [`MAX_BATCH`]; one item is checked
//! with `verify_strict`, several with ed25519 batch verification, which costs less per signature
//! (one multiscalar multiplication for the whole batch). A batch that fails is checked again
//! in halves, down to single `verify_strict` checks, so a bad signature is refused to its sender
//! only and costs the others of its batch a few smaller batch checks. The queue is bounded:
//! when it is full, a request checks its own signature. Under light load every batch is one
//! item and nothing waits; under heavy load the queue makes the batches.
//!
//! What a batch accepts: ed25519-dalek checks a random linear combination of the signatures'
//! equations, with weights drawn from all of the batch's inputs. A signature that is valid but
//! for a small-order part (an `R` or key with a torsion component) fails `verify_strict` always
//! and a batch about one time in eight, depending on the batch it lands in. Only the holder of
//! the device's private key can make such a signature, over the message it signed; keys of small
//! order, for which anything would pass, are refused here (and at enrollment, whose single
//! check is strict). So a batch never accepts a forgery, but such a malformed signature from
//! the device itself may be accepted or refused depending on load.

use std::sync::mpsc;

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::sync::oneshot;

/// The most signatures one batch checks (ed25519-dalek's gain flattens out well before this).
const MAX_BATCH: usize = 64;
/// The most checks waiting for the thread; beyond, requests check their own (as one core's
/// worth of batches is then behind).
const MAX_QUEUED: usize = 4 * 1024;

struct Job {
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
    verdict: oneshot::Sender<bool>,
}

/// The handle of the checking thread; cheap to clone.
#[derive(Clone)]
pub struct SignatureBatcher {
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for SignatureBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureBatcher")
    }
}

impl SignatureBatcher {
    /// Starts the checking thread; it ends when the last handle is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_QUEUED);
        std::thread::Builder::new().name("signature-batch".into()).spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                // Requests that went away (a client timeout) need no verdict.
                batch.retain(|job| !job.verdict.is_closed());
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
        let strict = || key.verify_strict(message, &signature).is_ok();
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => return strict(),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                tracing::error!("the signature-checking thread is gone; checking on the request's thread");
                return strict();
            }
        }
        match answer.await {
            Ok(verdict) => verdict,
            // The thread dropped the job (a panic): an honest report must not read as forged.
            Err(_) => {
                tracing::error!("the signature-checking thread dropped a check; checking on the request's thread");
                strict()
            }
        }
    }
}

/// Checks `batch` and answers every job in it: as a batch, and a batch that fails in halves,
/// down to single strict checks.
fn check(mut batch: Vec<Job>) {
    if batch.len() == 1 {
        let job = batch.remove(0);
        let ok = job.key.verify_strict(&job.message, &job.signature).is_ok();
        // The request may have gone away; its verdict is then no one's business.
        let _ = job.verdict.send(ok);
        return;
    }
    if batch.is_empty() {
        return;
    }
    let holds = {
        let messages: Vec<&[u8]> = batch.iter().map(|j| j.message.as_slice()).collect();
        let signatures: Vec<Signature> = batch.iter().map(|j| j.signature).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|j| j.key).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    metrics::counter!("patchgate_signature_batches_total", "outcome" => if holds { "held" } else { "split" })
        .increment(1);
    if holds {
        for job in batch {
            let _ = job.verdict.send(true);
        }
    } else {
        let second = batch.split_off(batch.len() / 2);
        check(batch);
        check(second);
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
