//! `oxbow group list | describe G | delete G | reset-offsets G`: consumer groups from
//! the command line. Group requests go to the group's coordinator, found with
//! FindCoordinator by [`ClusterClient`] (and retried while the broker is still creating
//! `__consumer_offsets`, loading a coordinator or moving it); log offsets come from
//! each partition's leader; `list` asks every broker.

use super::{check, list_offsets, metadata, on_every_broker, s, write_table, CliError, DEFAULT_BROKERS};
use crate::client::{ClusterClient, KafkaClient, Target};
use bytes::Buf;
use clap::{Args, Subcommand};
use kafka_protocol::messages::{self as m, ApiKey, GroupId, TopicName};
use kafka_protocol::protocol::Decodable;
use oxbow_core::kafka::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// `oxbow group …`.
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups: state, type (classic or consumer) and protocol type.
    List {
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Show a group's members, committed offsets and lag per partition.
    Describe {
        /// Group id.
        group: String,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Delete a group that has no active members (and its committed offsets).
    Delete {
        /// Group id.
        group: String,
        /// Broker addresses.
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Move a group's committed offsets of a topic (only while it has no members).
    ResetOffsets(ResetArgs),
}

/// `oxbow group reset-offsets G --topic T (--to-earliest|--to-latest|--to-offset N)`.
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// Topic whose offsets move.
    #[arg(long)]
    pub topic: String,
    /// Where the offsets go.
    #[command(flatten)]
    pub target: ResetTarget,
    /// Only this partition (default: every partition of the topic).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Print the plan without committing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Broker addresses.
    #[arg(long, default_value = DEFAULT_BROKERS)]
    pub brokers: String,
}

/// Exactly one reset target.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset of each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end offset of each partition (nothing left to consume).
    #[arg(long)]
    pub to_latest: bool,
    /// This offset, clamped to each partition's [start, end].
    #[arg(long, value_name = "N")]
    pub to_offset: Option<i64>,
}

/// Runs `oxbow group …`.
pub fn group(command: GroupCommand, out: &mut impl Write) -> Result<(), CliError> {
    match command {
        GroupCommand::List { brokers } => list(&brokers, out),
        GroupCommand::Describe { group, brokers } => describe(&brokers, &group, out),
        GroupCommand::Delete { group, brokers } => delete(&brokers, &group, out),
        GroupCommand::ResetOffsets(args) => reset_offsets(&args, out),
    }
}

// ---------------------------------------------------------------------------------
// Coordinator lookup
// ---------------------------------------------------------------------------------

/// Runs `op` against the coordinator of `group`; [`ClusterClient::with_target`] finds
/// it again and retries while it is loading, moving or being created.
fn with_coordinator<T>(
    client: &mut ClusterClient,
    group: &str,
    op: impl FnMut(&mut KafkaClient) -> Result<T, CliError>,
) -> Result<T, CliError> {
    client.with_target(&Target::GroupCoordinator(group.to_string()), op)
}

// ---------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------

/// A group as DescribeGroups (and, for consumer-protocol groups, ConsumerGroupDescribe)
/// shows it.
#[derive(Debug, Default)]
struct GroupView {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
    /// Group epoch, assignment epoch and assignor (consumer-protocol groups only).
    epochs: Option<(i32, i32, String)>,
}

impl GroupView {
    fn exists(&self) -> bool {
        self.state != "Dead"
    }
}

/// One member of a group.
#[derive(Debug, Default)]
struct MemberView {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    /// The member epoch (consumer-protocol groups only).
    epoch: Option<i32>,
    assigned: Vec<(String, i32)>,
}

/// Describes `group` on its coordinator.
fn describe_group(client: &mut KafkaClient, group: &str) -> Result<GroupView, CliError> {
    let mut request = m::DescribeGroupsRequest::default();
    request.groups = vec![GroupId(s(group))];
    let response: m::DescribeGroupsResponse = client.call(ApiKey::DescribeGroups, 5, &request)?;
    let described = response.groups.into_iter().next().ok_or_else(|| {
        refused(
            format!("describe group {group}"),
            2,
            "the broker answered no group",
        )
    })?;
    check(format!("describe group {group}"), described.error_code, None)?;
    let classic = described.protocol_type.as_str() == "consumer";
    let mut view = GroupView {
        state: described.group_state.as_str().to_string(),
        protocol_type: described.protocol_type.as_str().to_string(),
        protocol: described.protocol_data.as_str().to_string(),
        members: described
            .members
            .into_iter()
            .map(|member| MemberView {
                id: member.member_id.as_str().to_string(),
                instance_id: member.group_instance_id.map(|i| i.as_str().to_string()),
                client_id: member.client_id.as_str().to_string(),
                host: member.client_host.as_str().to_string(),
                epoch: None,
                assigned: if classic {
                    decode_assignment(member.member_assignment)
                } else {
                    Vec::new()
                },
            })
            .collect(),
        epochs: None,
    };
    if view.exists() {
        add_consumer_details(client, group, &mut view)?;
    }
    Ok(view)
}

/// The partitions in a classic consumer's assignment blob (version, then the
/// ConsumerProtocolAssignment at that version); nothing if it cannot be read.
fn decode_assignment(mut blob: bytes::Bytes) -> Vec<(String, i32)> {
    if blob.remaining() < 2 {
        return Vec::new();
    }
    let version = blob.get_i16().clamp(0, 3);
    let Ok(assignment) = m::ConsumerProtocolAssignment::decode(&mut blob, version) else {
        return Vec::new();
    };
    assignment
        .assigned_partitions
        .into_iter()
        .flat_map(|tp| {
            let topic = tp.topic.0.as_str().to_string();
            tp.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}

/// Fills member epochs and assignments from ConsumerGroupDescribe when `group` uses
/// the consumer protocol (KIP-848); a classic group is left as it is.
fn add_consumer_details(client: &mut KafkaClient, group: &str, view: &mut GroupView) -> Result<(), CliError> {
    let mut request = m::ConsumerGroupDescribeRequest::default();
    request.group_ids = vec![GroupId(s(group))];
    let response: m::ConsumerGroupDescribeResponse =
        client.call(ApiKey::ConsumerGroupDescribe, 0, &request)?;
    let Some(described) = response.groups.into_iter().next() else {
        return Ok(());
    };
    if described.error_code == ErrorCode::GROUP_ID_NOT_FOUND.0 {
        return Ok(()); // a classic group
    }
    check(
        format!("describe consumer group {group}"),
        described.error_code,
        described.error_message.as_ref(),
    )?;
    view.epochs = Some((
        described.group_epoch,
        described.assignment_epoch,
        described.assignor_name.as_str().to_string(),
    ));
    view.members = described
        .members
        .into_iter()
        .map(|member| MemberView {
            id: member.member_id.as_str().to_string(),
            instance_id: member.instance_id.map(|i| i.as_str().to_string()),
            client_id: member.client_id.as_str().to_string(),
            host: member.client_host.as_str().to_string(),
            epoch: Some(member.member_epoch),
            assigned: member
                .assignment
                .topic_partitions
                .into_iter()
                .flat_map(|tp| {
                    let topic = tp.topic_name.0.as_str().to_string();
                    tp.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect(),
        })
        .collect();
    Ok(())
}

/// The group's committed offsets (OffsetFetch v7), of `topic` or of every topic.
fn committed_offsets(
    client: &mut KafkaClient,
    group: &str,
    topic: Option<&str>,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let mut request = m::OffsetFetchRequest::default();
    request.group_id = GroupId(s(group));
    request.topics = None; // every topic; `topic` filters the answer
    let response: m::OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 7, &request)?;
    check(
        format!("committed offsets of group {group}"),
        response.error_code,
        None,
    )?;
    let mut offsets = BTreeMap::new();
    for t in response.topics {
        let name = t.name.0.as_str().to_string();
        if topic.is_some_and(|wanted| wanted != name) {
            continue;
        }
        for p in t.partitions {
            check(
                format!("committed offset of {name}/{}", p.partition_index),
                p.error_code,
                None,
            )?;
            if p.committed_offset >= 0 {
                offsets.insert((name.clone(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(offsets)
}

/// The log end offsets of `topic` (ListOffsets -1), or `None` if it no longer exists.
fn end_offsets(client: &mut ClusterClient, topic: &str) -> Result<Option<Vec<i64>>, CliError> {
    let response = metadata(client, Some(topic))?;
    let Some(t) = response.topics.first().filter(|t| t.error_code == 0) else {
        return Ok(None);
    };
    let partitions = t.partitions.len() as i32;
    list_offsets(client, topic, partitions, -1).map(Some)
}

fn refused(what: String, code: i16, message: &str) -> CliError {
    CliError::Refused {
        what,
        code,
        message: message.to_string(),
    }
}

// ---------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------

/// `group list`: ListGroups v5 on every broker of the cluster, merged.
fn list(brokers: &str, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = ClusterClient::connect(brokers)?;
    let (answers, notes) = on_every_broker(&mut client, |c, id| {
        let response: m::ListGroupsResponse =
            c.call(ApiKey::ListGroups, 5, &m::ListGroupsRequest::default())?;
        // In a cluster a broker lists the groups of the `__consumer_offsets` partitions
        // it leads and may add NOT_COORDINATOR for the others: its list is still good,
        // and the brokers leading the others list theirs.
        if response.error_code != ErrorCode::NOT_COORDINATOR.0 {
            check(format!("list groups on broker {id}"), response.error_code, None)?;
        }
        Ok(response.groups)
    })?;
    let mut groups: BTreeMap<String, [String; 3]> = BTreeMap::new();
    for g in answers.into_iter().flatten() {
        groups.insert(
            g.group_id.0.as_str().to_string(),
            [
                g.group_state.as_str().to_string(),
                g.group_type.as_str().to_string(),
                g.protocol_type.as_str().to_string(),
            ],
        );
    }
    write_groups(out, groups)?;
    for note in notes {
        writeln!(out, "note: {note}")?;
    }
    Ok(())
}

fn write_groups(out: &mut impl Write, groups: BTreeMap<String, [String; 3]>) -> Result<(), CliError> {
    if groups.is_empty() {
        writeln!(out, "no groups")?;
        return Ok(());
    }
    let rows = groups
        .into_iter()
        .map(|(id, [state, kind, protocol])| vec![id, state, kind, or_dash(protocol)])
        .collect();
    write_table(out, &["group", "state", "type", "protocol-type"], rows)
}

/// `group describe G`: the group, then one row per partition with a committed offset
/// or an owner: committed offset, log end, lag and owning member.
fn describe(brokers: &str, group: &str, out: &mut impl Write) -> Result<(), CliError> {
    let mut cluster = ClusterClient::connect(brokers)?;
    let (view, committed) = with_coordinator(&mut cluster, group, |client| {
        let view = describe_group(client, group)?;
        let committed = committed_offsets(client, group, None)?;
        Ok((view, committed))
    })?;
    if !view.exists() && committed.is_empty() {
        return Err(refused(
            format!("describe group {group}"),
            ErrorCode::GROUP_ID_NOT_FOUND.0,
            "no such group",
        ));
    }
    write_group_header(out, group, &view)?;
    let owners: BTreeMap<(String, i32), &MemberView> = view
        .members
        .iter()
        .flat_map(|m| m.assigned.iter().map(move |tp| (tp.clone(), m)))
        .collect();
    let partitions: BTreeSet<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    let mut ends: BTreeMap<String, Option<Vec<i64>>> = BTreeMap::new();
    let mut rows = Vec::new();
    for (topic, partition) in partitions {
        if !ends.contains_key(&topic) {
            let offsets = end_offsets(&mut cluster, &topic)?;
            ends.insert(topic.clone(), offsets);
        }
        let end = ends
            .get(&topic)
            .and_then(|o| o.as_ref())
            .and_then(|o| o.get(partition as usize).copied())
            .filter(|o| *o >= 0);
        let current = committed.get(&(topic.clone(), partition)).copied();
        let owner = owners.get(&(topic.clone(), partition));
        rows.push(vec![
            topic,
            partition.to_string(),
            opt(current),
            opt(end),
            opt(current.zip(end).map(|(c, e)| (e - c).max(0))),
            owner.map_or_else(|| "-".to_string(), |m| m.id.clone()),
            owner.map_or_else(|| "-".to_string(), |m| m.host.clone()),
            owner.map_or_else(|| "-".to_string(), |m| m.client_id.clone()),
        ]);
    }
    if rows.is_empty() {
        writeln!(out, "no committed offsets and no assigned partitions")?;
    } else {
        write_table(
            out,
            &[
                "topic",
                "partition",
                "committed",
                "log-end",
                "lag",
                "member",
                "host",
                "client",
            ],
            rows,
        )?;
    }
    write_members(out, &view)
}

fn write_group_header(out: &mut impl Write, group: &str, view: &GroupView) -> Result<(), CliError> {
    let kind = if view.epochs.is_some() {
        "consumer protocol"
    } else {
        "classic protocol"
    };
    let protocol = match (view.protocol_type.as_str(), view.protocol.as_str()) {
        ("", _) => String::new(),
        (kind, "") => format!(", protocol type {kind}"),
        (kind, assignor) => format!(", protocol type {kind} ({assignor})"),
    };
    writeln!(
        out,
        "group {group}: {}, {kind}{protocol}, {} members",
        if view.exists() { &view.state } else { "Empty" },
        view.members.len()
    )?;
    if let Some((group_epoch, assignment_epoch, assignor)) = &view.epochs {
        writeln!(
            out,
            "group epoch {group_epoch}, assignment epoch {assignment_epoch}, assignor {}",
            if assignor.is_empty() { "-" } else { assignor }
        )?;
    }
    Ok(())
}

fn write_members(out: &mut impl Write, view: &GroupView) -> Result<(), CliError> {
    if view.members.is_empty() {
        return Ok(());
    }
    writeln!(out, "members:")?;
    let rows = view
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<String> = m.assigned.iter().map(|(t, p)| format!("{t}/{p}")).collect();
            vec![
                m.id.clone(),
                m.instance_id.clone().unwrap_or_else(|| "-".to_string()),
                opt(m.epoch.map(i64::from)),
                m.client_id.clone(),
                m.host.clone(),
                if assigned.is_empty() {
                    "-".to_string()
                } else {
                    assigned.join(",")
                },
            ]
        })
        .collect();
    write_table(
        out,
        &["member", "instance", "epoch", "client", "host", "assigned"],
        rows,
    )
}

/// `group delete G`: DeleteGroups v2 on the coordinator.
fn delete(brokers: &str, group: &str, out: &mut impl Write) -> Result<(), CliError> {
    let what = format!("delete group {group}");
    let mut cluster = ClusterClient::connect(brokers)?;
    with_coordinator(&mut cluster, group, |client| {
        let mut request = m::DeleteGroupsRequest::default();
        request.groups_names = vec![GroupId(s(group))];
        let response: m::DeleteGroupsResponse = client.call(ApiKey::DeleteGroups, 2, &request)?;
        let code = response
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .map_or(ErrorCode::UNKNOWN_SERVER_ERROR.0, |r| r.error_code);
        match ErrorCode(code) {
            ErrorCode::NON_EMPTY_GROUP => Err(refused(
                what.clone(),
                code,
                "the group still has active members; stop its consumers first",
            )),
            ErrorCode::GROUP_ID_NOT_FOUND => Err(refused(what.clone(), code, "no such group")),
            _ => check(what.clone(), code, None),
        }
    })?;
    writeln!(out, "deleted group {group}")?;
    Ok(())
}

/// One partition's move in a reset.
#[derive(Debug)]
struct Move {
    partition: i32,
    current: Option<i64>,
    target: i64,
}

/// `group reset-offsets`: refused while the group has members; otherwise computes each
/// partition's target and commits them all at once (a simple commit: generation -1, no
/// member id).
fn reset_offsets(args: &ResetArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut cluster = ClusterClient::connect(&args.brokers)?;
    let partitions = topic_partitions(&mut cluster, &args.topic, args.partition)?;
    let count = partitions.iter().max().map_or(0, |p| p + 1);
    let earliest = list_offsets(&mut cluster, &args.topic, count, -2)?;
    let latest = list_offsets(&mut cluster, &args.topic, count, -1)?;
    let group = args.group.as_str();
    let moves = with_coordinator(&mut cluster, group, |client| {
        let view = describe_group(client, group)?;
        if !view.members.is_empty() {
            return Err(CliError::Usage(format!(
                "group {group} has {} active members (state {}): offsets can only be reset \
                 while the group is empty; stop its consumers first",
                view.members.len(),
                view.state
            )));
        }
        let committed = committed_offsets(client, group, Some(&args.topic))?;
        let moves: Vec<Move> = partitions
            .iter()
            .map(|&p| {
                let start = earliest.get(p as usize).copied().unwrap_or(0).max(0);
                let end = latest.get(p as usize).copied().unwrap_or(start).max(start);
                Move {
                    partition: p,
                    current: committed.get(&(args.topic.clone(), p)).copied(),
                    target: target_offset(&args.target, start, end),
                }
            })
            .collect();
        if !args.dry_run {
            commit(client, group, &args.topic, &moves)?;
        }
        Ok(moves)
    })?;
    let rows = moves
        .iter()
        .map(|m| {
            vec![
                args.topic.clone(),
                m.partition.to_string(),
                opt(m.current),
                m.target.to_string(),
            ]
        })
        .collect();
    write_table(out, &["topic", "partition", "current", "new"], rows)?;
    if args.dry_run {
        writeln!(out, "dry run: nothing committed")?;
    } else {
        writeln!(
            out,
            "reset {} partitions of {} for group {group}",
            moves.len(),
            args.topic
        )?;
    }
    Ok(())
}

/// The partitions a reset touches: `only`, checked, or all of `topic`'s.
fn topic_partitions(
    client: &mut ClusterClient,
    topic: &str,
    only: Option<i32>,
) -> Result<Vec<i32>, CliError> {
    let response = metadata(client, Some(topic))?;
    let t = response
        .topics
        .first()
        .ok_or_else(|| CliError::Usage(format!("no topic `{topic}`")))?;
    check(format!("topic {topic}"), t.error_code, None)?;
    let count = t.partitions.len() as i32;
    match only {
        Some(p) if !(0..count).contains(&p) => Err(CliError::Usage(format!(
            "--partition {p}: topic {topic} has partitions 0 to {}",
            count - 1
        ))),
        Some(p) => Ok(vec![p]),
        None => Ok((0..count).collect()),
    }
}

/// Where one partition goes, kept within its log: `[start, end]`.
fn target_offset(target: &ResetTarget, start: i64, end: i64) -> i64 {
    match (target.to_earliest, target.to_latest, target.to_offset) {
        (true, _, _) => start,
        (_, true, _) => end,
        (_, _, Some(offset)) => offset.clamp(start, end),
        // clap requires one of the three; without one, leave the log end.
        _ => end,
    }
}

/// A simple OffsetCommit (v8, generation -1, empty member id) of `moves`.
fn commit(client: &mut KafkaClient, group: &str, topic: &str, moves: &[Move]) -> Result<(), CliError> {
    let mut t = m::offset_commit_request::OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = moves
        .iter()
        .map(|mv| {
            let mut p = m::offset_commit_request::OffsetCommitRequestPartition::default();
            p.partition_index = mv.partition;
            p.committed_offset = mv.target;
            p.committed_leader_epoch = -1;
            p.committed_metadata = Some(s(""));
            p
        })
        .collect();
    let mut request = m::OffsetCommitRequest::default();
    request.group_id = GroupId(s(group));
    request.generation_id_or_member_epoch = -1;
    request.member_id = s("");
    request.group_instance_id = None;
    request.topics = vec![t];
    let response: m::OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &request)?;
    for t in response.topics {
        for p in t.partitions {
            check(
                format!(
                    "commit {}/{} for group {group}",
                    t.name.0.as_str(),
                    p.partition_index
                ),
                p.error_code,
                None,
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------

fn opt(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text
    }
}
