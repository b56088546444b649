//! Request bodies as DRF parses them: JSON or form-encoded into a map of
//! fields, then `CharField` semantics per field (required, null, blank, not a
//! string, trimmed).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use serde_json::{Map, Value};

use crate::auth::credentials::char_field_problems;
use crate::error::{ApiError, FieldErrors};

pub use crate::auth::credentials::MSG_REQUIRED;
pub const MSG_NULL: &str = "This field may not be null.";
pub const MSG_BLANK: &str = "This field may not be blank.";
pub const MSG_NOT_A_STRING: &str = "Not a valid string.";

/// How long a request's body may take to arrive, counted from its head
/// (app data; without it bodies are read without a deadline).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

/// The fields of a request body.
#[derive(Debug, Default)]
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses `body` by its content type, as DRF's JSON and form parsers do.
    /// An empty body is an empty set of fields whatever its type.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        if body.is_empty() {
            return Ok(Fields::default());
        }
        let raw = content_type.unwrap_or("");
        let media = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json" => Self::from_json(body),
            "application/x-www-form-urlencoded" => Self::from_form(body),
            _ => Err(ApiError::UnsupportedMediaType(raw.to_owned())),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::JsonParse(e.to_string()))?;
        let kind = match value {
            Value::Object(map) => return Ok(Fields(map)),
            Value::Null => return Err(non_field_error("No data provided")),
            Value::Array(_) => "list",
            Value::String(_) => "str",
            Value::Bool(_) => "bool",
            Value::Number(ref n) if n.is_f64() => "float",
            Value::Number(_) => "int",
        };
        Err(non_field_error(&format!(
            "Invalid data. Expected a dictionary, but got {kind}."
        )))
    }

    fn from_form(body: &[u8]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| ApiError::BadBody)?;
        // As Django's QueryDict: the last value of a repeated key wins.
        Ok(Fields(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ))
    }

    /// Whether the body has the field at all (even null or blank).
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A DRF `CharField` (trim_whitespace, allow_blank=False, allow_null=False):
    /// the trimmed string, or the messages to report for this field.
    pub fn char_field(&self, name: &str) -> Result<String, Vec<String>> {
        let value = match self.0.get(name) {
            None => return Err(vec![MSG_REQUIRED.to_owned()]),
            Some(Value::Null) => return Err(vec![MSG_NULL.to_owned()]),
            Some(Value::String(s)) => s.trim().to_owned(),
            // DRF accepts numbers and uses str(); Rust's formatting of
            // integers and ordinary floats is the same.
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(vec![MSG_NOT_A_STRING.to_owned()]),
        };
        if value.is_empty() {
            return Err(vec![MSG_BLANK.to_owned()]);
        }
        Ok(value)
    }

    /// An optional `CharField` (required=False, allow_blank, allow_null):
    /// `None` when absent, null or blank.
    pub fn optional_char_field(&self, name: &str) -> Result<Option<String>, Vec<String>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => match self.char_field(name) {
                Ok(value) => Ok(Some(value)),
                Err(messages) if messages == [MSG_BLANK] => Ok(None),
                Err(messages) => Err(messages),
            },
        }
    }

    /// An optional DRF `BooleanField`: `None` when absent or null; JSON
    /// booleans, and DRF's true/false strings and 1/0.
    pub fn bool_field(&self, name: &str) -> Result<Option<bool>, Vec<String>> {
        const TRUE: &[&str] = &[
            "true", "True", "TRUE", "on", "On", "ON", "yes", "Yes", "YES", "y", "Y", "1",
        ];
        const FALSE: &[&str] = &[
            "false", "False", "FALSE", "off", "Off", "OFF", "no", "No", "NO", "n", "N", "0",
        ];
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if TRUE.contains(&s.as_str()) => Ok(Some(true)),
            Some(Value::String(s)) if FALSE.contains(&s.as_str()) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
            Some(_) => Err(vec!["Must be a valid boolean.".to_owned()]),
        }
    }

    /// An optional DRF `IntegerField`: `None` when absent, null or blank.
    pub fn integer_field(&self, name: &str) -> Result<Option<i64>, Vec<String>> {
        let invalid = || vec!["A valid integer is required.".to_owned()];
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    /// A list of strings: a JSON array of strings, or (as a form field) one
    /// string of space-separated items. Required.
    pub fn string_list(&self, name: &str) -> Result<Vec<String>, Vec<String>> {
        match self.0.get(name) {
            None => Err(vec![MSG_REQUIRED.to_owned()]),
            Some(Value::Null) => Err(vec![MSG_NULL.to_owned()]),
            Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    _ => Err(vec![MSG_NOT_A_STRING.to_owned()]),
                })
                .collect(),
            Some(_) => Err(vec!["Expected a list of items.".to_owned()]),
        }
    }

    /// Several plain char fields (no validators beyond DRF's default NUL
    /// check); all their errors are reported together.
    pub fn char_fields<const N: usize>(&self, names: [&str; N]) -> Result<[String; N], ApiError> {
        let mut errors = FieldErrors::default();
        let values = names.map(|name| {
            let checked = self.char_field(name).and_then(|value| {
                let problems = char_field_problems(&value, None);
                if problems.is_empty() {
                    Ok(value)
                } else {
                    Err(problems)
                }
            });
            checked.unwrap_or_else(|messages| {
                errors.add(name, messages);
                String::new()
            })
        });
        errors.into_result().map(|()| values)
    }
}

fn non_field_error(message: &str) -> ApiError {
    ApiError::Validation(FieldErrors::single("non_field_errors", message))
}

impl FromRequest for Fields {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        // A body trickled in would otherwise hold the connection and this
        // request as long as the client likes.
        let deadline = req.app_data::<BodyTimeout>().map(|timeout| {
            let start = req
                .extensions()
                .get::<crate::connections::RequestStart>()
                .map_or_else(std::time::Instant::now, |start| start.0);
            start + timeout.0
        });
        // Always reads the body (within the configured limit): an unread
        // body makes actix close the connection.
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), body)
                    .await
                    .map_err(|_| ApiError::RequestTimeout)?,
                None => body.await,
            };
            let body = body.map_err(|e| {
                if e.as_response_error().status_code()
                    == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadBody
                }
            })?;
            Fields::parse(content_type.as_deref(), &body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<Fields, ApiError> {
        Fields::parse(Some("application/json"), body.as_bytes())
    }

    #[test]
    fn char_field_semantics() {
        let f = json(r#"{"a":" x ","b":null,"c":"  ","d":12,"e":true,"f":[1],"g":1.5}"#).unwrap();
        assert_eq!(f.char_field("a"), Ok("x".into()));
        assert_eq!(f.char_field("b"), Err(vec![MSG_NULL.into()]));
        assert_eq!(f.char_field("c"), Err(vec![MSG_BLANK.into()]));
        assert_eq!(f.char_field("d"), Ok("12".into()));
        assert_eq!(f.char_field("e"), Err(vec![MSG_NOT_A_STRING.into()]));
        assert_eq!(f.char_field("f"), Err(vec![MSG_NOT_A_STRING.into()]));
        assert_eq!(f.char_field("g"), Ok("1.5".into()));
        assert_eq!(f.char_field("missing"), Err(vec![MSG_REQUIRED.into()]));
    }

    #[test]
    fn forms_and_content_types() {
        let f = Fields::parse(Some("application/x-www-form-urlencoded"), b"a=1&a=2&b=%20").unwrap();
        assert_eq!(f.char_field("a"), Ok("2".into()));
        assert_eq!(f.char_field("b"), Err(vec![MSG_BLANK.into()]));
        let f = Fields::parse(Some("application/json; charset=utf-8"), br#"{"a":"x"}"#).unwrap();
        assert_eq!(f.char_field("a"), Ok("x".into()));
        assert!(Fields::parse(Some("text/plain"), b"x").is_err());
        assert!(Fields::parse(None, b"x").is_err());
        assert!(Fields::parse(Some("text/plain"), b"").is_ok());
    }

    #[test]
    fn non_objects_and_bad_json() {
        for (body, expected) in [
            ("[1]", "Invalid data. Expected a dictionary, but got list."),
            ("\"x\"", "Invalid data. Expected a dictionary, but got str."),
            ("1", "Invalid data. Expected a dictionary, but got int."),
            ("null", "No data provided"),
        ] {
            match json(body) {
                Err(ApiError::Validation(e)) => {
                    assert_eq!(e, FieldErrors::single("non_field_errors", expected))
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(json("{bad"), Err(ApiError::JsonParse(_))));
        assert!(matches!(
            json(&"[".repeat(10_000)),
            Err(ApiError::JsonParse(_))
        ));
        assert!(matches!(
            Fields::parse(Some("application/json"), b"{\"a\":\"\xff\"}"),
            Err(ApiError::JsonParse(_))
        ));
    }
}
