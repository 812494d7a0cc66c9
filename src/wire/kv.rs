//! Wire types of the KV store, shared by servers (`http::kv`), clients
//! (`net::kv`) and the actors that produce `/status`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::causal::{FaultKind, Op, VClock, Versioned, Waiting, Write};
use crate::error::{Error, Result};

/// Header carrying a client's causal context: the node's delivered clock,
/// one integer per node in `NODE_ID` order, e.g. `3,0,1`.
pub const CAUSAL_CONTEXT: &str = "Causal-Context";

/// `POST /put` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub key: String,
    pub value: String,
}

/// `POST /incr` body: add `by` (may be negative) to counter `key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrRequest {
    pub key: String,
    pub by: i64,
}

/// `POST /incr` answer: the increment and its write's clock (the total is
/// read with `/get`, or in the same `/txn`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncrResponse {
    pub key: String,
    pub by: i64,
    pub vc: VClock,
    pub node: usize,
}

/// A JSON object read as a list of pairs in document order, keeping
/// duplicate keys (a map type would silently keep only the last one), so
/// that a transaction naming a key twice can be refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pairs<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Pairs<V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Pairs<V>, A::Error> {
                let mut pairs = Vec::new();
                while let Some(entry) = map.next_entry::<String, V>()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// `POST /txn` body. Every part is optional; at least one must name a key.
/// The reads see the state before the transaction's own writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Pairs<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incr: Option<Pairs<i64>>,
}

/// The kind of a value, shown as `"type"` beside counters (registers, the
/// default, show none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    Register,
    Counter,
}

/// A key's value as clients see it: a register's text or a counter's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadValue {
    pub value: String,
    pub vc: VClock,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueKind>,
}

impl From<&Versioned> for ReadValue {
    fn from(v: &Versioned) -> Self {
        ReadValue {
            value: v.value.text().into_owned(),
            vc: v.vc.clone(),
            kind: v.value.is_counter().then_some(ValueKind::Counter),
        }
    }
}

/// `POST /txn` answer: each key read (`null` if absent), and the
/// transaction's clock (its write's, or the snapshot's for a read-only
/// transaction).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TxnResponse {
    pub values: BTreeMap<String, Option<ReadValue>>,
    pub vc: VClock,
    pub node: usize,
}

/// Size limits on client input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Most keys one transaction may name (reads, writes and increments).
    pub max_txn_keys: usize,
    /// Most bytes of keys and values one transaction may carry.
    pub max_txn_bytes: usize,
}

/// A checked transaction: the keys to read and the operations to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTxn {
    pub reads: Vec<String>,
    pub ops: Vec<Op>,
}

impl Limits {
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::invalid("key must be a non-empty string"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::TooLarge(format!(
                "key is {} bytes, the limit is {}",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    pub fn check_put(&self, req: &PutRequest) -> Result<()> {
        self.check_key(&req.key)?;
        if req.value.len() > self.max_value_bytes {
            return Err(Error::TooLarge(format!(
                "value is {} bytes, the limit is {}",
                req.value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// The JSON body limit for `/put`: room for the largest key and value,
    /// even fully escaped.
    pub fn put_body_limit(&self) -> usize {
        2 * (self.max_key_bytes + self.max_value_bytes) + 1024
    }

    /// The JSON body limit for `/txn`: room for the largest transaction,
    /// even fully escaped, with its punctuation.
    pub fn txn_body_limit(&self) -> usize {
        2 * self.max_txn_bytes + 32 * self.max_txn_keys + 1024
    }

    /// Checks a transaction and turns it into reads and operations. Too
    /// many keys or bytes answer 413; an empty transaction, a key named
    /// twice (read twice, written twice, or both read and written) 400.
    pub fn check_txn(&self, req: TxnRequest) -> Result<CheckedTxn> {
        let reads = req.reads.unwrap_or_default();
        let writes = req.writes.unwrap_or_default().0;
        let incr = req.incr.unwrap_or_default().0;
        let keys = reads.len() + writes.len() + incr.len();
        if keys == 0 {
            return Err(Error::invalid(
                "empty transaction: give at least one of \"reads\", \"writes\" or \"incr\"",
            ));
        }
        if keys > self.max_txn_keys {
            return Err(Error::TooLarge(format!(
                "transaction names {keys} keys, the limit is {} (TXN_MAX_KEYS)",
                self.max_txn_keys
            )));
        }
        let bytes: usize = reads.iter().map(String::len).sum::<usize>()
            + writes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + incr.iter().map(|(k, _)| k.len() + 8).sum::<usize>();
        if bytes > self.max_txn_bytes {
            return Err(Error::TooLarge(format!(
                "transaction carries {bytes} bytes of keys and values, the limit is {} (TXN_MAX_BYTES)",
                self.max_txn_bytes
            )));
        }
        let mut seen = BTreeSet::new();
        let names = reads
            .iter()
            .chain(writes.iter().map(|(k, _)| k))
            .chain(incr.iter().map(|(k, _)| k));
        for key in names {
            self.check_key(key)?;
            if !seen.insert(key.as_str()) {
                return Err(Error::invalid(format!(
                    "key {key:?} appears twice in the transaction (a key is read, written or incremented at most once; reads see the state before the writes)"
                )));
            }
        }
        for (key, value) in &writes {
            self.check_value(key, value)?;
        }
        let ops = writes
            .into_iter()
            .map(|(key, value)| Op::Put { key, value })
            .chain(incr.into_iter().map(|(key, by)| Op::Incr { key, by }))
            .collect();
        Ok(CheckedTxn { reads, ops })
    }

    fn check_value(&self, key: &str, value: &str) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::TooLarge(format!(
                "value of {key:?} is {} bytes, the limit is {}",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }
}

/// `POST /put` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutResponse {
    pub key: String,
    pub value: String,
    pub vc: VClock,
    pub node: usize,
}

/// `GET /get` query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetQuery {
    pub key: String,
}

/// `GET /get` answer. A counter's `value` is its total, in decimal, and
/// `type` says `counter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetResponse {
    pub key: String,
    pub value: String,
    pub vc: VClock,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueKind>,
}

/// `GET /status` query: `store=false` omits the key map (for polling a
/// large store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    pub store: Option<bool>,
}

/// One key in `/status` (a counter: its total, and `"type": "counter"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    pub value: String,
    pub vc: VClock,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ValueKind>,
}

/// One peer in `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: usize,
    pub url: String,
    /// The peer's last reported received clock.
    pub acked: VClock,
    /// The peer's last reported delivered clock.
    pub delivered: VClock,
    /// Our writes it has not acknowledged.
    pub backlog: u64,
    pub reachable: bool,
    pub failures: u32,
    pub fault: Option<FaultKind>,
}

/// `GET /status` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node: usize,
    pub cluster_size: usize,
    /// The delivered clock as reads see it.
    pub vc: VClock,
    pub store: BTreeMap<String, StoredValue>,
    pub keys: usize,
    pub buffered_msgs: usize,
    /// Per origin with writes in the delivery buffer: how many, the first,
    /// the write it waits for and for how long.
    #[serde(default)]
    pub waiting: Vec<Waiting>,
    pub log_entries: usize,
    /// True once the node serves `/get` and `/put` (as `/ready`).
    #[serde(default)]
    pub ready: bool,
    /// While not ready: what the node waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    pub peers: Vec<PeerStatus>,
}

/// `POST /peer/replicate` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateRequest {
    pub from: usize,
    pub writes: Vec<Write>,
}

/// `POST /peer/replicate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateAck {
    pub received: VClock,
    pub delivered: VClock,
}

impl ReplicateAck {
    /// A peer's answer must carry clocks of this cluster's size `n`; a peer
    /// configured with another `PEERS` list is refused, not merged.
    pub fn validate(&self, n: usize) -> Result<()> {
        if self.received.len() != n || self.delivered.len() != n {
            return Err(Error::invalid(format!(
                "peer answered with clocks of {} and {} entries, the cluster has {n}",
                self.received.len(),
                self.delivered.len()
            )));
        }
        Ok(())
    }
}

/// `POST /admin/fault` body: delay or drop replication from this node to
/// `peer` for `duration_ms`; `kind: null` clears a fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub peer: usize,
    pub kind: Option<FaultKind>,
    #[serde(default)]
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_txn_keys: 4,
            max_txn_bytes: 40,
        }
    }

    fn txn(json: &str) -> Result<CheckedTxn> {
        let req: TxnRequest = serde_json::from_str(json).map_err(Error::invalid)?;
        limits().check_txn(req)
    }

    #[test]
    fn a_transaction_becomes_reads_and_operations() {
        let t = txn(r#"{"reads":["a"],"writes":{"c":"1"},"incr":{"n":-2}}"#).unwrap();
        assert_eq!(t.reads, ["a"]);
        assert_eq!(
            t.ops,
            vec![
                Op::Put {
                    key: "c".into(),
                    value: "1".into()
                },
                Op::Incr {
                    key: "n".into(),
                    by: -2
                }
            ]
        );
    }

    #[test]
    fn bad_transactions_are_refused_with_the_right_kind_of_error() {
        let invalid = [
            r#"{}"#,
            r#"{"reads":[],"writes":{}}"#,
            r#"{"reads":["a","a"]}"#,
            r#"{"writes":{"a":"1","a":"2"}}"#,
            r#"{"writes":{"a":"1"},"incr":{"a":1}}"#,
            r#"{"reads":["a"],"writes":{"a":"1"}}"#,
            r#"{"writes":{"":"1"}}"#,
            r#"{"writes":{"a":1}}"#,
            r#"{"incr":{"a":"1"}}"#,
            r#"{"reads":"a"}"#,
            r#"{"write":{"a":"1"}}"#,
        ];
        for json in invalid {
            assert!(matches!(txn(json), Err(Error::InvalidInput(_))), "{json}");
        }
        let too_large = [
            r#"{"reads":["a","b","c","d","e"]}"#,
            r#"{"writes":{"a":"0123456789abcdef","b":"0123456789abcdef","c":"0123456789"}}"#,
            r#"{"writes":{"a":"0123456789abcdefX"}}"#,
            r#"{"reads":["0123456789"]}"#,
        ];
        for json in too_large {
            assert!(matches!(txn(json), Err(Error::TooLarge(_))), "{json}");
        }
    }

    #[test]
    fn pairs_keep_duplicates_and_order_and_serialize_as_an_object() {
        let p: Pairs<i64> = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(p.0, vec![("b".into(), 1), ("a".into(), 2), ("b".into(), 3)]);
        assert_eq!(
            serde_json::to_string(&Pairs(vec![("x".to_string(), 1)])).unwrap(),
            r#"{"x":1}"#
        );
    }

    #[test]
    fn an_ack_must_carry_clocks_of_the_cluster_size() {
        let ack = ReplicateAck {
            received: VClock::zero(3),
            delivered: VClock::zero(3),
        };
        assert!(ack.validate(3).is_ok());
        assert!(ack.validate(2).is_err());
        let ack = ReplicateAck {
            received: VClock::zero(3),
            delivered: VClock::zero(4),
        };
        assert!(ack.validate(3).is_err());
    }
}
