//! Activating a held allocation early, by request: exactly-once on the request's own id; an
//! allocation already spendable answers `alreadyActive`, a returned one cannot be activated.
//! What activation does to the ledger is [`super::allocation::plan_activations`].

use super::ledger::{RequestKind, StoredRequest};
use super::refusal::Refusal;
use super::reverse::Target;
use super::{CompanyId, RequestId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivateCmd {
    pub company: CompanyId,
    pub request_id: RequestId,
    pub target: Target,
    pub now_ms: i64,
}

impl ActivateCmd {
    /// What a replay of this request id must repeat: the allocation, by the same name.
    pub fn fingerprint(&self) -> String {
        match &self.target {
            Target::Request(id) => id.to_string(),
            Target::Order { event, order } => format!("order {event} {order}"),
        }
    }
}

/// What an activation answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivateReceipt {
    pub request_id: RequestId,
    /// The allocation as the request named it (by order: the allocation).
    pub original_request_id: RequestId,
    /// It was spendable already (active, or earned nothing): nothing was written.
    pub already_active: bool,
    /// Coins this request made spendable.
    pub coins: i64,
    pub activated_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub balance: i64,
    pub pending_balance: i64,
}

/// A request id seen before: a replay if it activated the same allocation by the same name.
pub fn answer_repeat(prev: &StoredRequest, cmd: &ActivateCmd) -> Result<(), Refusal> {
    let same = prev.kind == RequestKind::Activate && prev.fingerprint == cmd.fingerprint();
    if same { Ok(()) } else { Err(Refusal::RequestIdConflict(cmd.request_id.clone())) }
}

/// Only an allocation can be activated: anything else the request names is not one.
pub fn check_allocation<'a>(named: Option<&'a StoredRequest>, name: &RequestId) -> Result<&'a StoredRequest, Refusal> {
    match named {
        Some(n) if n.is_credit() => Ok(n),
        _ => Err(Refusal::AllocationNotFound(name.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventName, OrderId, UserId};

    fn stored(kind: RequestKind, fingerprint: &str) -> StoredRequest {
        StoredRequest {
            kind,
            user: UserId::parse("U").unwrap(),
            event: None,
            coins: 0,
            fingerprint: fingerprint.into(),
            original: None,
            response: None,
            alias_of: None,
            state: None,
        }
    }

    #[test]
    fn a_repeat_is_the_same_allocation_by_the_same_name_and_only_allocations_activate() {
        let by_id = ActivateCmd {
            company: CompanyId::parse("C").unwrap(),
            request_id: RequestId::parse("ACT-1").unwrap(),
            target: Target::Request(RequestId::parse("P1").unwrap()),
            now_ms: 0,
        };
        assert_eq!(answer_repeat(&stored(RequestKind::Activate, "P1"), &by_id), Ok(()));
        assert_eq!(answer_repeat(&stored(RequestKind::Activate, "P2"), &by_id), Err(Refusal::RequestIdConflict(by_id.request_id.clone())));
        assert_eq!(answer_repeat(&stored(RequestKind::Reverse, "P1"), &by_id), Err(Refusal::RequestIdConflict(by_id.request_id.clone())));
        let by_order = ActivateCmd { target: Target::Order { event: EventName::parse("BUY").unwrap(), order: OrderId::parse("O-1").unwrap() }, ..by_id };
        assert_eq!(by_order.fingerprint(), "order BUY O-1");
        let name = RequestId::parse("S1").unwrap();
        assert_eq!(check_allocation(Some(&stored(RequestKind::Redeem, "")), &name), Err(Refusal::AllocationNotFound(name.clone())));
        assert_eq!(check_allocation(None, &name), Err(Refusal::AllocationNotFound(name.clone())));
    }
}
