//! Request bodies: JSON **objects** only. Serde's derived readers also take a JSON array as
//! the fields in order, so `[]` or `["p1", "swarm"]` would be read as a registration; every body
//! is therefore read as a JSON value first, refused unless it is an object, and only then
//! turned into its type. Errors are 400 `bad_json` (413 `body_too_large`, 415
//! `unsupported_media_type` from the JSON reader), and nothing changes.

use axum::extract::{FromRequest, Json, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON object body read as `T`.
pub struct JsonObject<T>(pub T);

impl<S, T> FromRequest<S> for JsonObject<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<Value>::from_request(req, state).await?;
        object(value).map(JsonObject)
    }
}

/// `value` as `T` if it is a JSON object; 400 `bad_json` naming what is wrong otherwise.
pub fn object<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "bad_json",
            "the body must be a JSON object ({...}); see /v1/openapi.json for its fields",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::{ReasonRequest, RegisterRequest};
    use serde_json::json;

    #[test]
    fn arrays_and_scalars_are_refused_even_where_every_field_is_optional() {
        for body in [
            json!([]),
            json!(["p1", "swarm/a"]),
            json!(null),
            json!("x"),
            json!(3),
        ] {
            let e = object::<RegisterRequest>(body.clone()).err().unwrap();
            assert_eq!((e.status.as_u16(), e.code), (400, "bad_json"), "{body}");
            assert!(object::<ReasonRequest>(body).is_err());
        }
        let nested = object::<RegisterRequest>(json!({"budgets": [5, 100]}))
            .err()
            .unwrap();
        assert_eq!(nested.code, "bad_json");
        let ok: RegisterRequest = object(json!({"id": "a1"})).unwrap();
        assert_eq!(ok.id.as_deref(), Some("a1"));
    }
}
