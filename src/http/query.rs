//! The API's query-string extractor: actix's `web::Query`, but a value that does not parse is
//! refused with the parameter's name ("limit: invalid digit found in string"), not the parser's
//! sentence alone, which left the caller to guess which of several numbers was wrong.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A deserialized query string (`?a=1&b=x`); refused with `400 invalid_query` naming the
/// parameter at fault.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T> ApiQuery<T> {
    /// The deserialized value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for ApiQuery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Parses `query` (without the `?`) into `T`.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs = url::form_urlencoded::parse(query.as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(|e| {
        let at = e.path().to_string();
        let message = if at == "." { e.inner().to_string() } else { format!("{at}: {}", e.inner()) };
        ApiError::bad_request("invalid_query", message)
    })
}

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_query(req.query_string()).map(ApiQuery).map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::parse_query;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Q {
        limit: Option<u64>,
        stage: Option<u32>,
        name: Option<String>,
    }

    #[test]
    fn a_bad_value_is_refused_with_its_parameter_named() {
        assert_eq!(
            parse_query::<Q>("limit=5&name=a%20b").unwrap(),
            Q { limit: Some(5), stage: None, name: Some("a b".into()) }
        );
        assert_eq!(parse_query::<Q>("").unwrap(), Q { limit: None, stage: None, name: None });
        for (query, named) in [("limit=5&stage=-1", "stage: "), ("limit=x", "limit: "), ("stage=1e30", "stage: ")] {
            let e = parse_query::<Q>(query).unwrap_err().to_string();
            assert!(e.starts_with(&format!("400 invalid_query: {named}")), "{query}: {e}");
        }
        let unknown = parse_query::<Q>("colour=red").unwrap_err().to_string();
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
    }
}
