//! Pure core of the causal KV store.
