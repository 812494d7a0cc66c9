//! HTTP layer of the causal KV store.
