//! Pure core of the causal KV store: no actix, no I/O, no wall clock.
//!
//! * [`vclock`]: vector clocks and their partial order.
//! * [`write`]: the replicated unit (one or more puts and increments,
//!   applied together) and its arbitration rank.
//! * [`buffer`]: the causal delivery buffer (per-origin queues, O(1)
//!   amortized draining).
//! * [`store`]: versioned registers and PN-counters, and the convergence
//!   rules.
//! * [`log`]: delivered writes kept until causally stable, for resending
//!   and for catching up a peer on any origin.
//! * [`node`]: the node's protocol as one state machine (stamping, group
//!   commit, rebuilding after an empty start, stability, refusals): inputs
//!   in, effects out.
//! * [`stream`]: reliable replication towards one peer (batching, acks,
//!   backoff, relay, injected faults).
//! * [`session`]: causal contexts carried by clients across nodes.
//!
//! The actors in `actors::kv` each wrap one of these (`ClockActor` the node,
//! `DeliveryBufferActor` the buffer, `StoreActor` the store, each
//! `ReplicatorActor` a stream); everything that decides anything lives here
//! and is tested here, by unit tests and by the scenario scripts under
//! `tests/scenarios/`.

pub mod buffer;
pub mod log;
pub mod node;
pub mod session;
pub mod store;
pub mod stream;
pub mod vclock;
pub mod write;

pub use buffer::{DeliveryBuffer, Offered, Waiting, WriteId};
pub use log::ReplicationLog;
pub use node::{Boot, Effect, Group, Input, Node, NodeConfig, RequestId, Snapshot};
pub use store::{Kind, PnCounter, Store, Value, Versioned};
pub use stream::{FaultKind, PeerStream, Plan, StreamConfig};
pub use vclock::VClock;
pub use write::{validate_ops, NodeId, Op, Write};
