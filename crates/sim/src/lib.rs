//! A deterministic, seeded, virtual-time simulator of many DP2PTCS nodes running the real
//! `dp2ptcs-dht` crate.
//!
//! Every node is a [`dp2ptcs_dht::Dht`]; the simulator is its caller: it delivers requests and
//! responses after a log-normal one-way latency, loses some, fires timers, makes nodes join and
//! leave without notice (churn), and can make a fraction of the nodes adversarial (they drop what
//! they are asked to store and answer every lookup either with the adversarial nodes closest to
//! the target or with made-up ids closer than anyone, see [`AdversaryMode`]). It then measures lookups and record retrieval. See [`SimConfig`] for the scenario and
//! [`Report`] for what is measured.
//!
//! With [`SimConfig::mailbox`] it runs the store-and-forward scenario instead
//! ([`MailboxScenario`]): deposits for recipients that are offline or across a partition, the
//! partition heals and the recipients come back and fetch, and [`MailboxReport`] gives the
//! delivery ratio, delays and the bytes each node holds.
//!
//! Everything random comes from one ChaCha8 generator seeded by [`SimConfig::seed`] and every
//! collection iterated is ordered, so the same configuration gives byte-identical output. No
//! wall clock, no IO.

mod net;
mod sim;
mod stats;

pub use net::NetModel;
pub use sim::{run, AdversaryMode, MailboxReport, MailboxScenario, Report, SimConfig};
pub use stats::{mean, percentile};
