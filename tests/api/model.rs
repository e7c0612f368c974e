//! Property test: random allocate / replay / reconfigure sequences against an in-memory model of
//! Allocation and the ledger invariants, on both backends. After every step each user's balance matches the model and
//! `verify` finds nothing.

use std::collections::HashMap;

use coins::domain::Refusal;
use coins::domain::allocate::{AllocateCmd, AllocateOk};
use coins::domain::config::ConfigValues;
use coins::domain::{CoinConfigId, Coins, CompanyId, ConfigKind, EventName, RequestId, UserId};
use coins::store::StoreError;
use proptest::prelude::*;

use crate::helpers::*;

const COMPANIES: [&str; 2] = ["C0", "C1"];
const EVENTS: [&str; 3] = ["E0", "E1", "E2"]; // E2 never has a configuration
const USERS: usize = 4;
const REQUESTS: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Allocate { company: usize, user: usize, event: usize, request: usize },
    SetAmount { config: usize, amount: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..COMPANIES.len(), 0..USERS, 0..EVENTS.len(), 0..REQUESTS)
            .prop_map(|(company, user, event, request)| Op::Allocate { company, user, event, request }),
        1 => (0..3usize, 1..100i64).prop_map(|(config, amount)| Op::SetAmount { config, amount }),
    ]
}

/// The configurations every case starts with: DEFAULT E0, DEFAULT E1, CUSTOM (C0, E1).
fn initial_configs() -> Vec<ConfigValues> {
    let v = |kind, company: &str, event: &str, amount| ConfigValues {
        kind,
        company_id: CompanyId::parse(company).unwrap(),
        event: EventName::parse(event).unwrap(),
        amount: Coins::amount(amount),
        earning: Default::default(),
        validity_days: None,
        max_per_user_per_day: None,
        max_per_user: None,
        active: true,
    };
    vec![v(ConfigKind::Default, "C1", "E0", 5), v(ConfigKind::Default, "C1", "E1", 3), v(ConfigKind::Custom, "C0", "E1", 11)]
}

#[derive(Default)]
struct Model {
    amounts: Vec<i64>,
    requests: HashMap<(usize, usize), (usize, usize, i64)>,
    users: HashMap<usize, (usize, i64)>,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Allocated(i64),
    Replayed(i64),
    Conflict,
    Mismatch,
    NoConfig,
}

impl Model {
    fn amount_for(&self, company: usize, event: usize) -> Option<i64> {
        match (company, event) {
            (0, 1) => Some(self.amounts[2]),
            (_, 0) => Some(self.amounts[0]),
            (_, 1) => Some(self.amounts[1]),
            _ => None,
        }
    }

    fn allocate(&mut self, company: usize, user: usize, event: usize, request: usize) -> Expect {
        if let Some(&(u, e, coins)) = self.requests.get(&(company, request)) {
            return if u == user && e == event { Expect::Replayed(coins) } else { Expect::Conflict };
        }
        let Some(amount) = self.amount_for(company, event) else { return Expect::NoConfig };
        if let Some(&(owner, _)) = self.users.get(&user)
            && owner != company
        {
            return Expect::Mismatch;
        }
        self.requests.insert((company, request), (user, event, amount));
        self.users.entry(user).or_insert((company, 0)).1 += amount;
        Expect::Allocated(amount)
    }
}

fn observed(result: Result<AllocateOk, StoreError>) -> Expect {
    match result {
        Ok(AllocateOk::Allocated { coins, .. }) => Expect::Allocated(coins.get()),
        Ok(AllocateOk::Replayed { coins }) => Expect::Replayed(coins.get()),
        Ok(AllocateOk::Zero) => panic!("a fixed amount never earns zero"),
        Err(StoreError::Refused(Refusal::RequestIdConflict(_))) => Expect::Conflict,
        Err(StoreError::Refused(Refusal::UserCompanyMismatch { .. })) => Expect::Mismatch,
        Err(StoreError::Refused(Refusal::ConfigNotFound { .. })) => Expect::NoConfig,
        Err(e) => panic!("unexpected store error: {e}"),
    }
}

async fn check_sequence(backend: Backend, ops: Vec<Op>) {
    let Some(db) = test_db(backend).await else { return };
    let store = db.store.clone();
    let mut ids: Vec<(CoinConfigId, i64, ConfigValues)> = Vec::new();
    let mut model = Model::default();
    for values in initial_configs() {
        model.amounts.push(values.amount.unwrap().get());
        let c = store.create_config(values.clone(), "model", 0).await.unwrap();
        ids.push((c.id, c.version, values));
    }
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Allocate { company, user, event, request } => {
                let cmd = AllocateCmd {
                    purchase: Default::default(),
                    company: CompanyId::parse(COMPANIES[company]).unwrap(),
                    user: UserId::parse(&format!("U{user}")).unwrap(),
                    event: EventName::parse(EVENTS[event]).unwrap(),
                    request_id: RequestId::parse(&format!("R{request}")).unwrap(),
                    now_ms: 1_000 + step as i64,
                };
                let expected = model.allocate(company, user, event, request);
                let got = observed(store.allocate(vec![cmd]).await.pop().unwrap());
                assert_eq!(got, expected, "step {step}: {op:?}");
            }
            Op::SetAmount { config, amount } => {
                let (id, version, values) = &mut ids[config];
                values.amount = Coins::amount(amount);
                let updated = store.update_config(*id, *version, values.clone(), "model", 0).await.unwrap();
                *version = updated.version;
                model.amounts[config] = amount;
            }
        }
        for user in 0..USERS {
            let balance = store.balance(&UserId::parse(&format!("U{user}")).unwrap(), 0).await.unwrap();
            let expected = model.users.get(&user).map(|&(company, coins)| (COMPANIES[company].to_owned(), coins));
            assert_eq!(balance.map(|b| (b.company.to_string(), b.balance)), expected, "user U{user} after step {step}");
        }
    }
    let report = store.verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, model.requests.len() as i64);
}

fn run_cases(backend: Backend, cases: u32) {
    let config = ProptestConfig { cases, ..ProptestConfig::default() };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check_sequence(backend, ops));
    });
}

#[test]
fn random_allocate_and_replay_sequences_match_the_model_on_sqlite() {
    run_cases(Backend::Sqlite, 48);
}

#[test]
fn random_allocate_and_replay_sequences_match_the_model_on_postgres() {
    run_cases(Backend::Postgres, 24);
}
