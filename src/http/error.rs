//! Mapping `Error` to HTTP responses, and extractor errors to the same shape.
//!
//! Every 4xx and 5xx this crate produces has the body `{"error": "..."}`
//! (`wire::ErrorBody`, which the clients in `net` decode).
//! Actix's own extractor failures (malformed JSON, a body over the limit, a
//! missing query parameter) are routed through `json_config`/`query_config`
//! so they take that shape too instead of actix's plain-text default.

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::error::Error;
use crate::wire::ErrorBody;

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut resp = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        resp.json(ErrorBody {
            error: self.to_string(),
        })
    }
}

/// JSON extractor configuration: size limit and JSON-shaped errors.
pub fn json_config(limit_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit_bytes)
        .content_type_required(false)
        .error_handler(|err, _req: &HttpRequest| {
            let mapped = match &err {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => {
                    Error::TooLarge(format!("request body too large: {err}"))
                }
                _ => Error::InvalidInput(format!("invalid JSON body: {err}")),
            };
            actix_web::error::InternalError::from_response(err, mapped.error_response()).into()
        })
}

/// Query-string extractor configuration with JSON-shaped errors.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        let mapped = Error::InvalidInput(format!("invalid query string: {err}"));
        actix_web::error::InternalError::from_response(err, mapped.error_response()).into()
    })
}

/// Raw body (`web::Bytes`) configuration with a size limit.
pub fn payload_config(limit_bytes: usize) -> web::PayloadConfig {
    web::PayloadConfig::new(limit_bytes)
}

/// Fallback for unknown routes: 404 with a JSON body.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    Error::NotFound(format!("no route for {} {}", req.method(), req.path())).error_response()
}

/// Fallback for a known path with the wrong method: 405 with a JSON body.
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(ErrorBody {
        error: format!("method {} not allowed on {}", req.method(), req.path()),
    })
}

/// Reads a raw body up to `limit` bytes (for routes that must see the exact
/// bytes, such as signed peer requests). Over the limit: `TooLarge`.
pub async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> crate::error::Result<web::Bytes> {
    use futures_util::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::invalid(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::TooLarge(format!("request body over {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    #[actix_rt::test]
    async fn errors_render_as_json_with_status() {
        let cases = [
            (Error::invalid("bad"), 400),
            (Error::NotFound("x".into()), 404),
            (Error::Unauthorized("who".into()), 401),
            (Error::TooLarge("big".into()), 413),
            (Error::unavailable("busy"), 503),
            (Error::internal("bug"), 500),
        ];
        for (err, code) in cases {
            let resp = err.error_response();
            assert_eq!(resp.status().as_u16(), code);
            if code == 503 {
                assert!(resp.headers().contains_key(header::RETRY_AFTER));
            }
            let body = to_bytes(resp.into_body()).await.unwrap();
            let parsed: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed.error, err.to_string());
        }
    }
}
