//! Reading the upload form of a release: a multipart body whose fields may come in any order,
//! the file streamed to the blob store as it arrives (never whole in memory), text fields
//! bounded. Nothing is committed here; a problem with a field becomes a message next to it.

use actix_multipart::{Field, Multipart};
use futures_util::{StreamExt, TryStreamExt};

use super::super::pages::FieldErrors;
use super::super::session::{UiError, UiUser};
use crate::domain::names::{FileName, FirmwareVersion, ProductName};
use crate::services::publish_release::{NewRelease, StoredBlob, store_blob};
use crate::services::{ServiceError, Services};

/// Text fields are short; notes may be long but bounded.
const SHORT_FIELD: usize = 256;
const NOTES_FIELD: usize = 64 * 1024;

/// What the user typed in the upload form (kept when it is shown again with errors).
#[derive(Debug, Default)]
pub(super) struct UploadValues {
    pub(super) version: String,
    pub(super) rollback_floor: String,
    pub(super) notes: String,
}

/// The upload form as read from the multipart body.
#[derive(Default)]
pub(super) struct Upload {
    pub(super) values: UploadValues,
    pub(super) csrf: String,
    pub(super) file: Option<(FileName, StoredBlob)>,
    pub(super) errors: FieldErrors,
    pub(super) too_large: bool,
}

impl Upload {
    /// The release to commit, or the field errors to show.
    pub(super) fn into_release(mut self, product: ProductName) -> Result<NewRelease, Box<Self>> {
        let version = match self.values.version.trim() {
            "" => Err("Enter the version, a semantic version such as 1.4.2.".to_owned()),
            v => FirmwareVersion::parse(v).map_err(|e| e.to_string()),
        };
        let rollback_floor = match self.values.rollback_floor.trim() {
            "" => Ok(FirmwareVersion::zero()),
            v => FirmwareVersion::parse(v).map_err(|e| e.to_string()),
        };
        if self.file.is_none() {
            self.errors.add("file", "Choose the firmware file to upload.");
        }
        match (version, rollback_floor, self.file.take()) {
            (Ok(version), Ok(rollback_floor), Some((file_name, blob))) if self.errors.is_empty() => {
                let notes = Some(self.values.notes.trim().to_owned()).filter(|n| !n.is_empty());
                Ok(NewRelease {
                    product,
                    version,
                    file_name,
                    notes,
                    rollback_floor: Some(rollback_floor),
                    blob,
                    role: None,
                    delist: Vec::new(),
                })
            }
            (version, floor, _) => {
                for (key, result) in [("version", version.err()), ("rollback_floor", floor.err())] {
                    if let Some(message) = result {
                        self.errors.add(key, message);
                    }
                }
                Err(Box::new(self))
            }
        }
    }
}

fn bad_body(e: actix_multipart::MultipartError) -> UiError {
    UiError::Service(ServiceError::invalid("invalid_multipart", format!("The upload could not be read: {e}.")))
}

/// A text field, cut at `limit` bytes (with a message) so one field cannot fill memory.
async fn read_text(
    mut field: Field,
    key: &'static str,
    limit: usize,
    errors: &mut FieldErrors,
) -> Result<String, UiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        buf.extend_from_slice(&chunk.map_err(bad_body)?);
        if buf.len() > limit {
            errors.add(key, format!("At most {limit} bytes."));
            buf.truncate(limit);
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Streams the file to the blob store (nothing is committed here).
async fn read_file(svc: &Services, user: &UiUser, field: Field, up: &mut Upload) -> Result<(), UiError> {
    let raw = field.content_disposition().and_then(|cd| cd.get_filename()).unwrap_or_default().to_owned();
    if raw.is_empty() {
        up.errors.add("file", "Choose the firmware file to upload.");
        return Ok(());
    }
    let file_name = match FileName::parse(&raw) {
        Ok(name) => name,
        Err(e) => {
            up.errors.add("file", format!("Rename the file: {e}."));
            return Ok(());
        }
    };
    // Browsers send the fields in page order and the token leads the form: a file that comes
    // before a valid token (a forged or hand-made form) is refused before a byte is stored.
    user.check_csrf(&up.csrf)?;
    if up.file.is_some() {
        return Err(UiError::Service(ServiceError::invalid("duplicate_field", "The form has more than one file.")));
    }
    match store_blob(svc, field, svc.config.max_upload_bytes).await {
        Ok(blob) => up.file = Some((file_name, blob)),
        Err(ServiceError::TooLarge { limit }) => {
            up.too_large = true;
            up.errors.add("file", format!("The file is larger than the limit of {limit} bytes."));
        }
        Err(ServiceError::Invalid { message, .. }) => up.errors.add("file", message),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Reads every field, in any order; unknown fields are skipped.
pub(super) async fn read_upload(svc: &Services, user: &UiUser, mut payload: Multipart) -> Result<Upload, UiError> {
    let mut up = Upload::default();
    while let Some(field) = payload.try_next().await.map_err(bad_body)? {
        match field.name().unwrap_or_default() {
            "version" => up.values.version = read_text(field, "version", SHORT_FIELD, &mut up.errors).await?,
            "rollback_floor" => {
                up.values.rollback_floor = read_text(field, "rollback_floor", SHORT_FIELD, &mut up.errors).await?
            }
            "notes" => up.values.notes = read_text(field, "notes", NOTES_FIELD, &mut up.errors).await?,
            "csrf" => up.csrf = read_text(field, "csrf", SHORT_FIELD, &mut FieldErrors::default()).await?,
            "file" => read_file(svc, user, field, &mut up).await?,
            _ => {}
        }
        if up.too_large {
            // Reading on would take in the rest of an oversized file for nothing.
            break;
        }
    }
    Ok(up)
}
