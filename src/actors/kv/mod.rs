//! Actors of the causal KV store.
