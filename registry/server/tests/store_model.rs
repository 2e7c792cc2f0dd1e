//! Model-based test of the registry's storage: after any sequence of operations, committed in
//! random batches with random reopenings, the state rebuilt from sled equals both the live
//! in-memory state and a plain `BTreeMap` model.

use std::collections::BTreeMap;

use herald_registry::model::{ConfigRecord, Mode, SchemaRecord, VersionRecord};
use herald_registry::state::State;
use herald_registry::store::{Op, Store};
use herald_schema::{CompatibilityLevel, SchemaType};
use proptest::prelude::*;

type Projection = (
    BTreeMap<u32, SchemaRecord>,
    BTreeMap<(String, u32), VersionRecord>,
    BTreeMap<Option<String>, Option<CompatibilityLevel>>,
    BTreeMap<Option<String>, Mode>,
    u32,
);

#[derive(Default)]
struct Model {
    schemas: BTreeMap<u32, SchemaRecord>,
    versions: BTreeMap<(String, u32), VersionRecord>,
    configs: BTreeMap<Option<String>, Option<CompatibilityLevel>>,
    modes: BTreeMap<Option<String>, Mode>,
    next_id: u32,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutSchema(id, record) => {
                self.schemas.insert(*id, record.clone());
            }
            Op::DeleteSchema(id) => {
                self.schemas.remove(id);
            }
            Op::PutVersion(subject, version, record) => {
                self.versions.insert((subject.clone(), *version), *record);
            }
            Op::DeleteVersion(subject, version) => {
                self.versions.remove(&(subject.clone(), *version));
            }
            Op::PutConfig(scope, config) => {
                self.configs.insert(scope.clone(), config.compatibility);
            }
            Op::DeleteConfig(scope) => {
                self.configs.remove(scope);
            }
            Op::PutMode(scope, mode) => {
                self.modes.insert(scope.clone(), *mode);
            }
            Op::DeleteMode(scope) => {
                self.modes.remove(scope);
            }
            Op::NextId(id) => self.next_id = *id,
            // Not part of the projection: the registry reads it at open.
            Op::ContentKeyScheme(_) => {}
        }
    }

    fn project(&self) -> Projection {
        (
            self.schemas.clone(),
            self.versions.clone(),
            self.configs.clone(),
            self.modes.clone(),
            self.next_id.max(1),
        )
    }
}

fn project(state: &State) -> Projection {
    let schemas = state
        .schemas
        .iter()
        .map(|(id, record)| (*id, (**record).clone()))
        .collect();
    let versions = state
        .subjects
        .iter()
        .flat_map(|(subject, versions)| {
            versions
                .iter()
                .map(move |(v, r)| ((subject.clone(), *v), *r))
        })
        .collect();
    let configs = state
        .configs
        .iter()
        .map(|(scope, config)| (scope.clone(), config.compatibility))
        .collect();
    let modes = state
        .modes
        .iter()
        .map(|(scope, mode)| (scope.clone(), *mode))
        .collect();
    (schemas, versions, configs, modes, state.next_id)
}

fn scope() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|s| Some(s.to_owned()))
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let subject = prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned);
    let id = 1u32..6;
    let version = 1u32..5;
    prop_oneof![
        (id.clone(), "[a-z]{0,8}").prop_map(|(id, text)| Op::PutSchema(
            id,
            SchemaRecord {
                schema_type: SchemaType::Avro,
                text: format!("\"{text}\""),
                references: Vec::new(),
                content_key: text
            }
        )),
        id.clone().prop_map(Op::DeleteSchema),
        (subject.clone(), version.clone(), id, any::<bool>())
            .prop_map(|(s, v, id, deleted)| Op::PutVersion(s, v, VersionRecord { id, deleted })),
        (subject, version).prop_map(|(s, v)| Op::DeleteVersion(s, v)),
        (
            scope(),
            prop::sample::select(CompatibilityLevel::ALL.to_vec())
        )
            .prop_map(|(scope, level)| Op::PutConfig(
                scope,
                ConfigRecord {
                    compatibility: Some(level),
                    normalize: None
                }
            )),
        scope().prop_map(Op::DeleteConfig),
        (
            scope(),
            prop::sample::select(vec![Mode::Readwrite, Mode::Readonly, Mode::Import])
        )
            .prop_map(|(s, m)| Op::PutMode(s, m)),
        scope().prop_map(Op::DeleteMode),
        (1u32..100).prop_map(Op::NextId),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn store_and_state_behave_like_a_map(batches in prop::collection::vec((prop::collection::vec(op(), 1..6), any::<bool>()), 1..12)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let mut state = State::from_snapshot(store.load().expect("load"));
        let mut model = Model::default();
        for (ops, reopen) in batches {
            runtime.block_on(store.commit(&ops)).expect("commit");
            state.apply(&ops);
            ops.iter().for_each(|op| model.apply(op));
            if reopen {
                drop(store);
                store = Store::open(dir.path()).expect("reopen");
            }
            let reloaded = State::from_snapshot(store.load().expect("load"));
            prop_assert_eq!(project(&state), model.project());
            prop_assert_eq!(project(&reloaded), model.project());
        }
    }
}
