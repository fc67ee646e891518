//! Counters and registers of the contract.

/// Indirect counter indexed by service id.
pub const SERVICE: &str = "IngressImpl.service_counter";
/// Direct counter of `crt`.
pub const CRT: &str = "IngressImpl.crt_counter";
/// Direct counter of `target`.
pub const TARGET: &str = "IngressImpl.target_counter";
/// Register: round-robin position per service (switch-internal).
pub const RR_STATE: &str = "IngressImpl.rr_state";
/// Register: SYNs digested and not pinned yet (switch-internal).
pub const SYN_PENDING: &str = "IngressImpl.syn_pending";
