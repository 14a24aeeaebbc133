//! Properties of the controller state machine: any sequence of commands (valid or not)
//! applied by two brokers gives byte-identical state; the state and the snapshot file
//! round-trip; and garbage given to every decoder (command, batch, state, snapshot) is
//! an error, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use oxbow_core::controller::*;
use oxbow_core::raft::{LogId, Membership, SnapshotMeta};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("orders".to_string()),
        Just("audit".to_string()),
        "[a-z]{1,6}",
        Just("bad name".to_string())
    ]
}

fn replicas() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(0u64..6, 0..5)
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (0u64..6, 0u64..4, proptest::option::of("[a-c]")).prop_map(|(id, epoch, rack)| {
            Command::RegisterBroker(BrokerRegistration {
                id,
                rpc_addr: format!("n{id}:1"),
                kafka_addr: format!("n{id}:2"),
                rack,
                epoch,
            })
        }),
        (0u64..6, 0u64..4, any::<bool>()).prop_map(|(broker, epoch, alive)| Command::SetBrokerLiveness {
            broker,
            epoch,
            alive
        }),
        (name(), proptest::collection::vec(replicas(), 0..4), any::<bool>()).prop_map(
            |(name, assignment, cfg)| {
                let configs = if cfg {
                    BTreeMap::from([("retention.ms".to_string(), "1000".to_string())])
                } else {
                    BTreeMap::new()
                };
                Command::CreateTopic {
                    name,
                    configs,
                    assignment,
                }
            }
        ),
        name().prop_map(|name| Command::DeleteTopic { name }),
        (name(), proptest::collection::vec(replicas(), 0..3))
            .prop_map(|(name, assignment)| Command::CreatePartitions { name, assignment }),
        (name(), any::<bool>()).prop_map(|(name, del)| Command::AlterTopicConfigs {
            name,
            set: BTreeMap::from([("segment.ms".to_string(), "5000".to_string())]),
            delete: if del {
                BTreeSet::from(["retention.ms".to_string()])
            } else {
                BTreeSet::new()
            },
        }),
        (name(), 0i32..3, replicas()).prop_map(|(topic, partition, replicas)| Command::ReassignPartition {
            topic,
            partition,
            replicas
        }),
        (name(), 0i32..3).prop_map(|(topic, partition)| Command::FinishReassignment { topic, partition }),
        (name(), 0i32..3).prop_map(|(topic, partition)| Command::CancelReassignment { topic, partition }),
        ("[a-z]{1,4}", 4000u32..5000).prop_map(|(name, iterations)| Command::UpsertUser {
            name,
            credential: ScramCredential {
                mechanism: ScramMechanism::Sha256,
                salt: Bytes::from_static(b"s"),
                stored_key: Bytes::from_static(b"k"),
                server_key: Bytes::from_static(b"v"),
                iterations,
            },
        }),
        "[a-z]{1,4}".prop_map(|name| Command::DeleteUser {
            name,
            mechanism: ScramMechanism::Sha256
        }),
        (0u64..6, 0u32..2000).prop_map(|(broker, count)| Command::AllocateProducerIds { broker, count }),
    ]
}

fn apply_all(commands: &[Command]) -> (ControllerState, Vec<Result<Outcome, CommandError>>) {
    let mut state = ControllerState::new();
    let results = commands
        .iter()
        .enumerate()
        .map(|(i, c)| state.apply(i as u64, c))
        .collect();
    (state, results)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn same_log_same_bytes_and_snapshots_round_trip(commands in proptest::collection::vec(command(), 0..60)) {
        // Every broker decodes the stored batch and applies it.
        let stored: Vec<Command> = commands
            .iter()
            .map(|c| Command::from_batch(&c.to_batch()).unwrap())
            .collect();
        prop_assert_eq!(&stored, &commands);
        let (a, results_a) = apply_all(&commands);
        let (b, results_b) = apply_all(&stored);
        prop_assert_eq!(a.encode(), b.encode());
        prop_assert_eq!(results_a, results_b);
        prop_assert_eq!(ControllerState::decode(&a.encode()).unwrap(), a.clone());
        let meta = SnapshotMeta { last: LogId::new(2, commands.len() as u64), membership: Membership::with_voters([0, 1, 2]).unwrap() };
        let file = SnapshotFile::encode(&meta, &a);
        let back = SnapshotFile::decode(&file, 1 << 24).unwrap();
        prop_assert_eq!(back.meta, meta);
        prop_assert_eq!(back.state, a);
    }

    #[test]
    fn validation_agrees_with_apply(commands in proptest::collection::vec(command(), 1..40)) {
        let mut state = ControllerState::new();
        for (i, c) in commands.iter().enumerate() {
            let valid = state.validate(c).is_ok();
            let before = state.encode();
            let applied = state.apply(i as u64, c);
            prop_assert_eq!(valid, applied.is_ok());
            if applied.is_err() {
                prop_assert_eq!(state.encode(), before, "a refused command changes nothing");
            }
        }
    }

    #[test]
    fn garbage_never_panics_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Command::decode(&bytes);
        let _ = Command::from_batch(&Bytes::from(bytes.clone()));
        let _ = ControllerState::decode(&bytes);
        let _ = SnapshotFile::decode(&bytes, 1 << 20);
    }

    #[test]
    fn damaged_encodings_are_refused(commands in proptest::collection::vec(command(), 1..20), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (state, _) = apply_all(&commands);
        let meta = SnapshotMeta { last: LogId::new(1, 9), membership: Membership::with_voters([1]).unwrap() };
        for encoded in [commands[0].encode(), state.encode(), SnapshotFile::encode(&meta, &state)] {
            let mut damaged = encoded.to_vec();
            let i = at.index(damaged.len());
            damaged[i] ^= 1 << bit;
            prop_assert!(Command::decode(&damaged).is_err() || encoded != commands[0].encode());
            prop_assert!(ControllerState::decode(&damaged).is_err());
            prop_assert!(SnapshotFile::decode(&damaged, 1 << 24).is_err());
        }
    }
}
