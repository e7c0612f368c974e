//! Simulation: what an allocation or a return would do now (or at a later instant), decided by
//! the very rules and flows that apply it, with every write left out. It is a separate operation,
//! never a flag on a real one: a client pointed at real EnKash must never allocate by accident.

use super::allocate::AllocateCmd;
use super::allocation::AllocationState;
use super::refusal::Refusal;
use super::reverse::ReverseCmd;

/// The operation to simulate, with its own command (its `now_ms` is the instant simulated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimulateCmd {
    Allocate(AllocateCmd),
    Reverse(ReverseCmd),
}

impl SimulateCmd {
    pub fn now_ms(&self) -> i64 {
        match self {
            SimulateCmd::Allocate(c) => c.now_ms,
            SimulateCmd::Reverse(c) => c.now_ms,
        }
    }
}

/// What the real call would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOutcome {
    /// It would be applied (an allocation, or a return).
    Apply,
    /// Its request id (or, for an allocation, its order) was applied before: a replay.
    Replay,
    /// It would be refused, with this refusal's code.
    Refuse,
}

/// The simulated answer. Fields that do not apply to the operation or outcome are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Simulation {
    pub outcome: Option<SimOutcome>,
    /// Signed like the entry it would write (a return takes coins back: negative).
    pub coins: Option<i64>,
    pub base_coins: Option<i64>,
    /// The allocation's state after it (an allocation: its new record; a return: the original's).
    pub state: Option<AllocationState>,
    pub activates_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub coin_config_id: Option<String>,
    /// The allocation's calculation, as its record would keep it (JSON).
    pub calculation: Option<String>,
    pub balance_after: Option<i64>,
    pub pending_after: Option<i64>,
    /// The member's tier code before and after it, when the company has tiers.
    pub tier_before: Option<String>,
    pub tier_after: Option<String>,
    pub refusal: Option<Refusal>,
}
