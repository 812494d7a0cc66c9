//! HTTP clients (awc) for the services' peers: KV nodes, substations and the
//! balancer.
//!
//! A client encodes the request types of `wire` (or `grid::request`), sends
//! them with a bounded timeout, and turns the answer back into a value or an
//! [`Error`](crate::Error) of the matching group (an `ErrorBody` decoded from
//! a 4xx or 5xx keeps its message). Clients know nothing of actors or
//! handlers: the actors that use them (`ReplicatorActor`, `RouterActor`,
//! `LoadPollerActor`) and the service start-up code hand them their
//! addresses and timeouts.
//!
//! `awc::Client` is not `Send`: create one per actor, task or worker and
//! reuse it; never one per request.
//!
//! * [`kv`]: `PeerClient` (signed peer and admin requests) and `KvClient`
//!   (the client API, for the demo, the benchmarks and the tests).
//! * [`batch`]: `Batcher`, which coalesces the requests queued behind one in
//!   flight into one batch (entry → balancer, balancer → substation).
//! * [`dns`]: peers found by DNS (`dns+http://name:port`) and the resolver.
//! * [`grid`]: one forwarding hop of a charge request (`post_json`, `post_charge_body`), and
//!   `BalancerClient`, the entry service's view of the balancer.

pub mod batch;
pub mod dns;
pub mod grid;
pub mod kv;
