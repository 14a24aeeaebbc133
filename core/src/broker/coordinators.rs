//! Finding the coordinator of a key on an internal topic (`__consumer_offsets` for
//! groups, `__transaction_state` for transactional ids): the key's partition by a
//! stable hash, its leader the coordinator; the topic is created on first use (nobody
//! waits for it: clients retry FindCoordinator until the coordinator is up).

use super::shard::{MetadataCommand, NewTopic};
use super::Broker;
use crate::kafka::ErrorCode;
use crate::time::Instant;

/// An internal topic whose partitions host coordinators.
#[derive(Debug)]
pub struct CoordinatorTopic {
    /// The topic.
    pub name: &'static str,
    /// Its partition count when it is created.
    pub partitions_when_created: i32,
    /// The partition of a key, given the partition count.
    pub partition_of: fn(&str, i32) -> i32,
    /// The message while the topic is being created.
    pub creating: &'static str,
    /// The message while the key's partition has no leader.
    pub no_leader: &'static str,
    /// The message for an empty key.
    pub empty_key: &'static str,
}

/// FindCoordinator for `key` on `topic`: the broker leading the key's partition, or
/// `(error code, message)`.
pub fn coordinator_on(broker: &mut Broker, now: Instant, topic: &CoordinatorTopic, key: &str) -> Coordinator {
    if key.is_empty() {
        return Err((ErrorCode::INVALID_REQUEST.0, topic.empty_key));
    }
    let Some(count) = broker.metadata.topics.get(topic.name).map(|t| t.partitions) else {
        create(broker, now, topic);
        return Err((ErrorCode::COORDINATOR_NOT_AVAILABLE.0, topic.creating));
    };
    let partition = (topic.partition_of)(key, count);
    match super::cluster::leader_of(broker, topic.name, partition) {
        Some((leader, _)) => Ok(leader),
        None => Err((ErrorCode::COORDINATOR_NOT_AVAILABLE.0, topic.no_leader)),
    }
}

/// The coordinator's broker id, or why there is none: `(error code, message)`.
pub type Coordinator = Result<i32, (i16, &'static str)>;

/// Asks shard 0 to create the topic.
pub fn create(broker: &mut Broker, now: Instant, topic: &CoordinatorTopic) {
    let request = broker.take_request_id();
    let new_topic = NewTopic {
        name: topic.name.to_string(),
        partitions: topic.partitions_when_created,
        replication_factor: -1,
        configs: vec![
            // The coordinator trims the log itself, after checkpoints.
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
            ("segment.bytes".to_string(), (16u64 << 20).to_string()),
        ],
    };
    let command = MetadataCommand::CreateTopics {
        topics: vec![new_topic],
        validate_only: false,
    };
    broker.submit_command(now, request, command);
}
