//! The wire contract: every JSON shape Warren sends or accepts, and nothing else.
//!
//! The shapes follow `hopx-wire-api.md` (what the official Hopx SDKs really parse). Comments name
//! the client constraint behind a field when the constraint is not obvious, because these are the
//! places where a harmless-looking change breaks an unmodified SDK.

pub mod agent;
pub mod cluster;
pub mod control;
pub mod e2b;
