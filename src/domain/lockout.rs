//! Lockout of failed authentications: after `max_failures` consecutive failures a
//! client or password user is locked for `lock_ms`; while locked even the right secret is
//! refused. An attempt is counted *before* its secret is checked (and uncounted if it proves
//! right), so a burst of parallel guesses gets at most `max_failures` checks per lock period.

/// Settings, passed in so the stores stay free of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: i64,
    pub lock_ms: i64,
}

/// A subject's stored lockout state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    pub failed_attempts: i64,
    pub locked_until_ms: Option<i64>,
}

impl LockState {
    pub fn is_locked(self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|t| t > now_ms)
    }
}

/// Reserves one attempt: the state to store (the attempt counted as a failure, locking at the
/// maximum), or `None` while locked (then the secret must not be checked). Once a lock has run
/// out, counting starts again from this attempt; failures while locked never extend the lock.
pub fn reserve_attempt(state: LockState, now_ms: i64, policy: LockoutPolicy) -> Option<LockState> {
    if state.is_locked(now_ms) {
        return None;
    }
    let failed_attempts = if state.locked_until_ms.is_some() { 1 } else { state.failed_attempts + 1 };
    let locked_until_ms = (failed_attempts >= policy.max_failures).then(|| now_ms + policy.lock_ms);
    Some(LockState { failed_attempts, locked_until_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy { max_failures: 3, lock_ms: 100 };

    #[test]
    fn the_third_failure_locks_and_the_lock_runs_out() {
        let mut s = LockState::default();
        for _ in 0..2 {
            s = reserve_attempt(s, 0, POLICY).unwrap();
            assert!(!s.is_locked(0));
        }
        s = reserve_attempt(s, 0, POLICY).unwrap();
        assert_eq!(s, LockState { failed_attempts: 3, locked_until_ms: Some(100) });
        assert_eq!(reserve_attempt(s, 99, POLICY), None, "locked: not even counted");
        assert_eq!(reserve_attempt(s, 100, POLICY), Some(LockState { failed_attempts: 1, locked_until_ms: None }));
    }
}
