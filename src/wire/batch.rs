//! Batches of charge requests between the grid's own services.
//!
//! Under load the entry service and the balancer coalesce the requests that
//! queue up behind one in flight into one HTTP request (`net::batch`): the
//! body is a JSON array of `ChargeRequest`s, and the answer a JSON array of
//! [`BatchAnswer`]s, one per request, in the same order. Each item is
//! answered on its own, with the status and error the single-request route
//! would have given it: one refused or invalid request does not fail the
//! others. A batch as a whole fails only when it cannot be delivered or
//! read (then every item in it fails the same way).
//!
//! The batch routes are `POST /route/batch` (balancer) and
//! `POST /charge/batch` (substation). They are for the grid's services;
//! clients use the single-request routes.

use serde::{Deserialize, Serialize};

/// Most requests one batch may carry; a larger batch is answered 413.
pub const MAX_BATCH_ITEMS: usize = 256;

/// One request's answer in a batch: `{"status": 200, "grant": {...}}` or
/// `{"status": 503, "error": "..."}`. `T` is `ChargeGranted` where it is
/// made and a raw JSON value where it is only passed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAnswer<T> {
    /// The HTTP status the single-request route would have answered.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Encodes already encoded JSON items as one JSON array, without decoding
/// them again.
pub fn encode_array<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_joined_into_an_array() {
        assert_eq!(encode_array([]), b"[]");
        let joined = encode_array([&b"{\"a\":1}"[..], &b"2"[..]]);
        let back: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        assert_eq!(back, serde_json::json!([{"a": 1}, 2]));
    }

    #[test]
    fn answers_omit_what_they_lack() {
        let ok = BatchAnswer {
            status: 200,
            grant: Some(7),
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"status":200,"grant":7}"#
        );
        let refused: BatchAnswer<u32> =
            serde_json::from_str(r#"{"status":503,"error":"full"}"#).unwrap();
        assert_eq!(refused.grant, None);
        assert_eq!(refused.error.as_deref(), Some("full"));
    }
}
