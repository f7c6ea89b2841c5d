//! Errors as MidoNet answers them: a status code and an `Error-v1` JSON body
//! (`{"message", "code", "violations"}`), so that clients show what is
//! wrong. Store errors map to the codes MidoNet uses for the same cases.

use axum::http::StatusCode;
use serde_json::{json, Value};
use vnet_model::{visible, ValidationError};
use vnet_store::StoreError;

/// The most violations one answer lists (a topology may have many errors).
const MAX_VIOLATIONS: usize = 64;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Validation failures: (property, message).
    pub violations: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 naming the field of the request that is wrong.
    pub fn field(property: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{property}: {message}"),
            violations: vec![(property.to_string(), message)],
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    /// What vnet's model cannot hold: 400, saying so.
    pub fn unsupported(message: impl Into<String>) -> ApiError {
        ApiError::bad(message)
    }

    pub fn body(&self) -> Value {
        let mut v = json!({
            "message": self.message,
            "code": self.status.as_u16(),
        });
        if !self.violations.is_empty() {
            v["violations"] = self
                .violations
                .iter()
                .map(|(p, m)| json!({"property": p, "message": m}))
                .collect();
        }
        v
    }
}

fn invalid(errors: &[ValidationError]) -> ApiError {
    let n = errors.len();
    let mut message = format!(
        "the change makes the topology invalid ({n} error{}):",
        if n == 1 { "" } else { "s" }
    );
    for e in errors.iter().take(MAX_VIOLATIONS) {
        message.push_str(&format!(" {}: {};", e.path, e.message));
    }
    if n > MAX_VIOLATIONS {
        message.push_str(&format!(" ... and {} more", n - MAX_VIOLATIONS));
    }
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message,
        violations: errors
            .iter()
            .take(MAX_VIOLATIONS)
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::Invalid(errors) => return invalid(errors),
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Locked { .. } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::RevisionsExhausted { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::Compacted { .. } | StoreError::FutureRevision { .. } => {
                StatusCode::BAD_REQUEST
            }
            StoreError::Corrupt { .. } | StoreError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, visible(&e.to_string()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
