//! A group of the KIP-848 consumer protocol: members heartbeat with
//! ConsumerGroupHeartbeat, the coordinator assigns partitions (server-side assignor) and
//! hands them out incrementally.
//!
//! Epochs: the *group epoch* goes up whenever membership or subscriptions change; the
//! target assignment is recomputed for it (so the *assignment epoch* equals the group
//! epoch after every change). Each member has a *member epoch*; it moves to the
//! assignment epoch only after the member has given up every partition the target no
//! longer gives it (revocation, confirmed by the member's next heartbeat listing what
//! it owns). A partition is handed to its new owner only once its previous owner has
//! released it, so within an epoch no partition is owned by two members. A member that
//! does not revoke within its rebalance timeout, or stops heartbeating for the session
//! timeout, is removed and its partitions are freed.
//!
//! Every change is written to the log before the heartbeat that caused it is answered.

use super::assignor::{self, MemberSpec};
use super::coordinator::Ctx;
use super::records::{ConsumerGroupValue, ConsumerMemberValue, TopicPartitions};
use super::{ClientInfo, GroupResult, ReplyId, Topics};
use crate::kafka::protocol::messages as m;
use crate::kafka::protocol::protocol::StrBytes;
use crate::kafka::ErrorCode;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Debug)]
struct Member {
    instance_id: Option<String>,
    rack_id: Option<String>,
    client: ClientInfo,
    subscribed: Vec<String>,
    server_assignor: Option<String>,
    rebalance_timeout_ms: i32,
    member_epoch: i32,
    previous_epoch: i32,
    assigned: TopicPartitions,
    revoking: TopicPartitions,
    session_deadline: Instant,
    revocation_deadline: Option<Instant>,
    /// Left with epoch -2 (a static member restarting): kept until its session ends.
    left_static: bool,
    /// The assignment last sent, to send only changes.
    last_sent: Option<TopicPartitions>,
}

/// A KIP-848 consumer group.
#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    id: String,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, TopicPartitions>,
    instances: BTreeMap<String, String>,
    /// Wall-clock ms when the group last became empty (offset retention).
    pub(super) empty_since_ms: Option<i64>,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn ms(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

fn count(tps: &TopicPartitions) -> usize {
    tps.values().map(BTreeSet::len).sum()
}

fn minus(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (topic, partitions) in a {
        let rest: BTreeSet<i32> = match b.get(topic) {
            Some(other) => partitions.difference(other).copied().collect(),
            None => partitions.clone(),
        };
        if !rest.is_empty() {
            out.insert(topic.clone(), rest);
        }
    }
    out
}

fn intersect(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (topic, partitions) in a {
        if let Some(other) = b.get(topic) {
            let both: BTreeSet<i32> = partitions.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(topic.clone(), both);
            }
        }
    }
    out
}

fn overlaps(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    count(&intersect(a, b)) > 0
}

impl ConsumerGroup {
    /// A new, empty group.
    pub fn new(id: &str, wall_ms: i64) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            instances: BTreeMap::new(),
            empty_since_ms: Some(wall_ms),
        }
    }

    /// The group rebuilt from its stored value (members must heartbeat within a session).
    pub fn from_value(
        id: &str,
        value: &ConsumerGroupValue,
        now: Instant,
        session_timeout_ms: i32,
        wall_ms: i64,
    ) -> ConsumerGroup {
        let mut group = ConsumerGroup::new(id, wall_ms);
        group.group_epoch = value.group_epoch;
        group.assignment_epoch = value.assignment_epoch;
        for stored in &value.members {
            group.members.insert(
                stored.member_id.clone(),
                Member {
                    instance_id: stored.instance_id.clone(),
                    rack_id: stored.rack_id.clone(),
                    client: ClientInfo {
                        client_id: stored.client_id.clone(),
                        client_host: stored.client_host.clone(),
                    },
                    subscribed: stored.subscribed_topics.clone(),
                    server_assignor: stored.server_assignor.clone(),
                    rebalance_timeout_ms: stored.rebalance_timeout_ms,
                    member_epoch: stored.member_epoch,
                    previous_epoch: stored.member_epoch,
                    assigned: stored.assigned.clone(),
                    revoking: stored.revoking.clone(),
                    session_deadline: now + ms(session_timeout_ms),
                    revocation_deadline: (!stored.revoking.is_empty())
                        .then(|| now + ms(stored.rebalance_timeout_ms)),
                    left_static: false,
                    last_sent: None,
                },
            );
            group
                .target
                .insert(stored.member_id.clone(), stored.target.clone());
            if let Some(instance) = &stored.instance_id {
                group.instances.insert(instance.clone(), stored.member_id.clone());
            }
        }
        if !group.members.is_empty() {
            group.empty_since_ms = None;
        }
        group
    }

    /// The value to store.
    pub fn to_value(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            members: self
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberValue {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client.client_id.clone(),
                    client_host: m.client.client_host.clone(),
                    subscribed_topics: m.subscribed.clone(),
                    server_assignor: m.server_assignor.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    member_epoch: m.member_epoch,
                    assigned: m.assigned.clone(),
                    revoking: m.revoking.clone(),
                    target: self.target.get(id).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Whether the group has members.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// The state's name (ConsumerGroupDescribe, ListGroups).
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Topics any member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// Partitions each member owns (assigned or being revoked): for the checker that no
    /// partition has two owners.
    pub fn owners(&self) -> BTreeMap<(String, i32), Vec<String>> {
        let mut out: BTreeMap<(String, i32), Vec<String>> = BTreeMap::new();
        for (id, member) in &self.members {
            for tps in [&member.assigned, &member.revoking] {
                for (topic, partitions) in tps {
                    for p in partitions {
                        out.entry((topic.clone(), *p)).or_default().push(id.clone());
                    }
                }
            }
        }
        out
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline), m.revocation_deadline])
            .flatten()
            .min()
    }

    /// Checks an offset commit by member epoch.
    pub fn check_commit(&self, epoch: i32, member_id: &str) -> Result<(), ErrorCode> {
        if epoch < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(ErrorCode::UNKNOWN_MEMBER_ID)
            };
        }
        let member = self.members.get(member_id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        if epoch > member.member_epoch {
            Err(ErrorCode::FENCED_MEMBER_EPOCH)
        } else if epoch < member.member_epoch && epoch != member.previous_epoch {
            Err(ErrorCode::STALE_MEMBER_EPOCH)
        } else {
            Ok(())
        }
    }

    /// ConsumerGroupHeartbeat. Replies through `ctx` (after the change is durable).
    pub fn heartbeat(
        &mut self,
        ctx: &mut Ctx<'_>,
        reply: ReplyId,
        request: &m::ConsumerGroupHeartbeatRequest,
        client: &ClientInfo,
        topics: &Topics,
    ) {
        let fail = |ctx: &mut Ctx<'_>, code: ErrorCode, message: &str| {
            ctx.reply(
                reply,
                GroupResult::ConsumerHeartbeat(heartbeat_error(code.0, message)),
            );
        };
        if request
            .subscribed_topic_regex
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            return fail(
                ctx,
                ErrorCode::INVALID_REQUEST,
                "regular-expression subscriptions are not supported yet; subscribe to topic names",
            );
        }
        let mut changed = false;
        let member_id = match request.member_epoch {
            0 => match self.join(ctx, request, client) {
                Ok((id, joined_changed)) => {
                    changed |= joined_changed;
                    id
                }
                Err((code, message)) => return fail(ctx, code, message),
            },
            -1 | -2 => {
                let id = request.member_id.as_str().to_string();
                let static_leave = request.member_epoch == -2;
                match self.leave(
                    ctx,
                    &id,
                    request.instance_id.as_ref().map(|s| s.as_str()),
                    static_leave,
                    topics,
                ) {
                    Ok(()) => {
                        let mut response = m::ConsumerGroupHeartbeatResponse::default();
                        response.member_id = Some(str_bytes(&id));
                        response.member_epoch = request.member_epoch;
                        response.heartbeat_interval_ms = ctx.config.consumer_heartbeat_interval_ms;
                        ctx.persist(&self.id);
                        ctx.reply_after_persist(&self.id, reply, GroupResult::ConsumerHeartbeat(response));
                    }
                    Err(code) => fail(ctx, code, ""),
                }
                return;
            }
            epoch => {
                let id = request.member_id.as_str().to_string();
                let Some(member) = self.members.get(&id) else {
                    return fail(ctx, ErrorCode::UNKNOWN_MEMBER_ID, "");
                };
                if member.left_static {
                    return fail(ctx, ErrorCode::UNKNOWN_MEMBER_ID, "");
                }
                let owned_ok = request.topic_partitions.as_ref().is_none_or(|owned| {
                    let owned = owned_partitions(owned, topics);
                    count(&minus(&owned, &member.assigned)) == 0
                });
                if epoch != member.member_epoch && !(epoch == member.previous_epoch && owned_ok) {
                    return fail(ctx, ErrorCode::FENCED_MEMBER_EPOCH, "");
                }
                id
            }
        };
        let now = ctx.now;
        let session = ms(ctx.config.consumer_session_timeout_ms);
        let Some(member) = self.members.get_mut(&member_id) else {
            return fail(ctx, ErrorCode::UNKNOWN_MEMBER_ID, "");
        };
        member.session_deadline = now + session;
        // Updated fields (null: unchanged).
        if let Some(names) = &request.subscribed_topic_names {
            let mut names: Vec<String> = names.iter().map(|n| n.0.as_str().to_string()).collect();
            names.sort();
            names.dedup();
            if names != member.subscribed {
                member.subscribed = names;
                changed = true;
            }
        }
        if let Some(assignor) = &request.server_assignor {
            let assignor = assignor.as_str().to_string();
            if !assignor::ASSIGNORS.contains(&assignor.as_str()) {
                return fail(ctx, ErrorCode::UNSUPPORTED_ASSIGNOR, "unknown server assignor");
            }
            if member.server_assignor.as_deref() != Some(assignor.as_str()) {
                member.server_assignor = Some(assignor);
                changed = true;
            }
        }
        if request.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        if let Some(rack) = &request.rack_id {
            member.rack_id = Some(rack.as_str().to_string());
        }
        let owned = request
            .topic_partitions
            .as_ref()
            .map(|o| owned_partitions(o, topics));
        if changed {
            self.bump_epoch(ctx, topics);
        }
        let reconciled = self.reconcile_all(ctx, Some((&member_id, owned.as_ref())));
        let Some(member) = self.members.get_mut(&member_id) else {
            return fail(ctx, ErrorCode::UNKNOWN_MEMBER_ID, "");
        };
        let mut response = m::ConsumerGroupHeartbeatResponse::default();
        response.member_id = Some(str_bytes(&member_id));
        response.member_epoch = member.member_epoch;
        response.heartbeat_interval_ms = ctx.config.consumer_heartbeat_interval_ms;
        // The member reports partitions it no longer has (an answer that told it was
        // lost): tell it again, or a revocation would wait for its deadline.
        let resync = owned.as_ref().is_some_and(|o| {
            (*o != member.assigned && member.revoking.is_empty()) || count(&minus(o, &member.assigned)) > 0
        });
        if member.last_sent.as_ref() != Some(&member.assigned) || resync {
            member.last_sent = Some(member.assigned.clone());
            response.assignment = Some(assignment_of(&member.assigned, topics));
        }
        // News for the member (an assignment, a new epoch) may come from a change that
        // another request made and that is not durable yet: it is told only once the
        // group's state is (a reload would otherwise take back what it was told).
        let news = response.assignment.is_some() || response.member_epoch != request.member_epoch;
        if changed || reconciled || news {
            ctx.persist(&self.id);
            ctx.reply_after_persist(&self.id, reply, GroupResult::ConsumerHeartbeat(response));
        } else {
            ctx.reply(reply, GroupResult::ConsumerHeartbeat(response));
        }
    }

    /// A member joins (epoch 0). Returns its id and whether the group changed.
    fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &m::ConsumerGroupHeartbeatRequest,
        client: &ClientInfo,
    ) -> Result<(String, bool), (ErrorCode, &'static str)> {
        if request.rebalance_timeout_ms < 0 {
            return Err((
                ErrorCode::INVALID_REQUEST,
                "RebalanceTimeoutMs must be set when joining",
            ));
        }
        if request.subscribed_topic_names.is_none() {
            return Err((
                ErrorCode::INVALID_REQUEST,
                "SubscribedTopicNames must be set when joining",
            ));
        }
        if request.topic_partitions.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err((
                ErrorCode::INVALID_REQUEST,
                "TopicPartitions must be empty when joining",
            ));
        }
        let given = request.member_id.as_str();
        let instance = request.instance_id.as_ref().map(|s| s.as_str().to_string());
        // A static member taking over its previous incarnation's place.
        if let Some(instance) = &instance {
            if let Some(old_id) = self.instances.get(instance).cloned() {
                let old_left = self.members.get(&old_id).is_none_or(|m| m.left_static);
                if !old_left && old_id != given {
                    return Err((ErrorCode::UNRELEASED_INSTANCE_ID, "the instance id is in use"));
                }
                let id = if given.is_empty() {
                    ctx.new_member_id(instance)
                } else {
                    given.to_string()
                };
                if let Some(mut old) = self.members.remove(&old_id) {
                    old.left_static = false;
                    old.client = client.clone();
                    old.last_sent = None;
                    old.session_deadline = ctx.now + ms(ctx.config.consumer_session_timeout_ms);
                    if let Some(target) = self.target.remove(&old_id) {
                        self.target.insert(id.clone(), target);
                    }
                    self.members.insert(id.clone(), old);
                }
                self.instances.insert(instance.clone(), id.clone());
                return Ok((id, true));
            }
        }
        if let Some(existing) = self.members.get_mut(given) {
            // A rejoin of a fenced or restarted member: it owns nothing any more.
            existing.member_epoch = 0;
            existing.previous_epoch = 0;
            existing.assigned.clear();
            existing.revoking.clear();
            existing.last_sent = None;
            return Ok((given.to_string(), true));
        }
        if self.members.len() >= ctx.config.max_size {
            return Err((ErrorCode::GROUP_MAX_SIZE_REACHED, "the group is full"));
        }
        let id = if given.is_empty() {
            ctx.new_member_id(&client.client_id)
        } else {
            given.to_string()
        };
        self.members.insert(
            id.clone(),
            Member {
                instance_id: instance.clone(),
                rack_id: None,
                client: client.clone(),
                subscribed: Vec::new(),
                server_assignor: None,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                member_epoch: 0,
                previous_epoch: 0,
                assigned: TopicPartitions::new(),
                revoking: TopicPartitions::new(),
                session_deadline: ctx.now,
                revocation_deadline: None,
                left_static: false,
                last_sent: None,
            },
        );
        if let Some(instance) = instance {
            self.instances.insert(instance, id.clone());
        }
        self.empty_since_ms = None;
        Ok((id, true))
    }

    fn leave(
        &mut self,
        ctx: &mut Ctx<'_>,
        member_id: &str,
        instance: Option<&str>,
        static_leave: bool,
        topics: &Topics,
    ) -> Result<(), ErrorCode> {
        let id = match instance {
            Some(instance) if member_id.is_empty() => self
                .instances
                .get(instance)
                .cloned()
                .ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?,
            _ => member_id.to_string(),
        };
        let member = self.members.get_mut(&id).ok_or(ErrorCode::UNKNOWN_MEMBER_ID)?;
        if static_leave && member.instance_id.is_some() {
            // Keep the place (and the assignment) for the restarting instance until its
            // session ends.
            member.left_static = true;
            member.session_deadline = ctx.now + ms(ctx.config.consumer_session_timeout_ms);
            return Ok(());
        }
        self.remove_member(ctx, &id, topics);
        Ok(())
    }

    fn remove_member(&mut self, ctx: &mut Ctx<'_>, id: &str, topics: &Topics) {
        if let Some(member) = self.members.remove(id) {
            if let Some(instance) = member.instance_id {
                if self.instances.get(&instance).map(String::as_str) == Some(id) {
                    self.instances.remove(&instance);
                }
            }
        }
        self.target.remove(id);
        if self.members.is_empty() {
            self.empty_since_ms = Some(ctx.wall_ms);
        }
        self.bump_epoch(ctx, topics);
        self.reconcile_all(ctx, None);
    }

    /// The target assignment of the current members and subscriptions.
    fn compute_target(&self, default_assignor: &str, topics: &Topics) -> BTreeMap<String, TopicPartitions> {
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    MemberSpec {
                        subscribed: m.subscribed.iter().cloned().collect(),
                        current: self.target.get(id).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect();
        let name = self
            .members
            .values()
            .find_map(|m| m.server_assignor.clone())
            .unwrap_or_else(|| default_assignor.to_string());
        assignor::assign(&name, &specs, topics)
    }

    /// Membership or subscriptions changed: a new group epoch and its target assignment.
    fn bump_epoch(&mut self, ctx: &mut Ctx<'_>, topics: &Topics) {
        self.group_epoch += 1;
        self.target = self.compute_target(&ctx.config.consumer_default_assignor, topics);
        self.assignment_epoch = self.group_epoch;
        ctx.metrics.rebalances += 1;
    }

    /// Topics changed (created, deleted, more partitions): reassign if it matters.
    /// Returns whether the group changed.
    pub fn on_topics_changed(&mut self, ctx: &mut Ctx<'_>, topics: &Topics) -> bool {
        if self.members.is_empty()
            || self.compute_target(&ctx.config.consumer_default_assignor, topics) == self.target
        {
            return false;
        }
        self.bump_epoch(ctx, topics);
        self.reconcile_all(ctx, None);
        true
    }

    /// Moves every member toward its target. `heartbeat` names the member heartbeating
    /// now and what it says it owns. Returns whether anything changed.
    fn reconcile_all(
        &mut self,
        ctx: &mut Ctx<'_>,
        heartbeat: Option<(&String, Option<&TopicPartitions>)>,
    ) -> bool {
        let mut changed = false;
        // The heartbeating member first (it may release partitions others wait for),
        // then the rest in id order.
        let mut order: Vec<String> = Vec::new();
        if let Some((id, _)) = heartbeat {
            order.push(id.clone());
        }
        order.extend(
            self.members
                .keys()
                .filter(|id| Some(*id) != heartbeat.map(|h| h.0))
                .cloned(),
        );
        for id in order {
            let owned = heartbeat.filter(|(h, _)| **h == id).and_then(|(_, o)| o);
            changed |= self.reconcile(ctx, &id, owned);
        }
        changed
    }

    fn reconcile(&mut self, ctx: &mut Ctx<'_>, id: &str, owned: Option<&TopicPartitions>) -> bool {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held_by_others: TopicPartitions = {
            let mut all = TopicPartitions::new();
            for (other, member) in &self.members {
                if other == id {
                    continue;
                }
                for tps in [&member.assigned, &member.revoking] {
                    for (topic, partitions) in tps {
                        all.entry(topic.clone())
                            .or_default()
                            .extend(partitions.iter().copied());
                    }
                }
            }
            all
        };
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(id) else {
            return false;
        };
        if member.left_static {
            return false;
        }
        let before = (
            member.member_epoch,
            member.assigned.clone(),
            member.revoking.clone(),
        );
        // A revocation in progress ends when the member says it no longer owns them.
        if !member.revoking.is_empty() {
            match owned {
                Some(owned) if !overlaps(owned, &member.revoking) => {
                    member.revoking.clear();
                    member.revocation_deadline = None;
                }
                _ => return false,
            }
        }
        let to_revoke = minus(&member.assigned, &target);
        if count(&to_revoke) > 0 {
            member.assigned = intersect(&member.assigned, &target);
            member.revoking = to_revoke;
            member.revocation_deadline = Some(ctx.now + ms(member.rebalance_timeout_ms));
        } else {
            if member.member_epoch != assignment_epoch {
                member.previous_epoch = member.member_epoch;
                member.member_epoch = assignment_epoch;
            }
            let free = minus(&minus(&target, &member.assigned), &held_by_others);
            // PLANTED BUG (sim-bugs): partitions handed out before their owner released them.
            #[cfg(feature = "sim-bugs")]
            let free = if ctx.planted.hand_out_unreleased_partitions {
                minus(&target, &member.assigned)
            } else {
                free
            };
            for (topic, partitions) in free {
                member.assigned.entry(topic).or_default().extend(partitions);
            }
        }
        (member.member_epoch, &member.assigned, &member.revoking) != (before.0, &before.1, &before.2)
    }

    /// Runs deadlines: expired sessions and revocations. Returns whether the group changed.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>, topics: &Topics) -> bool {
        let now = ctx.now;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(ctx, id, topics);
        }
        !expired.is_empty()
    }

    /// ConsumerGroupDescribe's entry.
    pub fn describe(
        &self,
        topics: &Topics,
        default_assignor: &str,
    ) -> m::consumer_group_describe_response::DescribedGroup {
        use m::consumer_group_describe_response as d;
        let describe_tps = |tps: &TopicPartitions| {
            let mut assignment = d::Assignment::default();
            assignment.topic_partitions = tps
                .iter()
                .map(|(topic, partitions)| {
                    let mut entry = d::TopicPartitions::default();
                    entry.topic_id = topics.get(topic).map_or(Uuid::nil(), |t| Uuid::from_bytes(t.id));
                    entry.topic_name = m::TopicName(str_bytes(topic));
                    entry.partitions = partitions.iter().copied().collect();
                    entry
                })
                .collect();
            assignment
        };
        let mut group = d::DescribedGroup::default();
        group.group_id = m::GroupId(str_bytes(&self.id));
        group.group_state = str_bytes(self.state_name());
        group.group_epoch = self.group_epoch;
        group.assignment_epoch = self.assignment_epoch;
        let assignor = self
            .members
            .values()
            .find_map(|m| m.server_assignor.clone())
            .unwrap_or_else(|| default_assignor.to_string());
        group.assignor_name = str_bytes(&assignor);
        group.authorized_operations = i32::MIN;
        group.members = self
            .members
            .iter()
            .map(|(id, member)| {
                let mut entry = d::Member::default();
                entry.member_id = str_bytes(id);
                entry.instance_id = member.instance_id.as_deref().map(str_bytes);
                entry.rack_id = member.rack_id.as_deref().map(str_bytes);
                entry.member_epoch = member.member_epoch;
                entry.client_id = str_bytes(&member.client.client_id);
                entry.client_host = str_bytes(&member.client.client_host);
                entry.subscribed_topic_names = member
                    .subscribed
                    .iter()
                    .map(|t| m::TopicName(str_bytes(t)))
                    .collect();
                entry.assignment = describe_tps(&member.assigned);
                entry.target_assignment = describe_tps(&self.target.get(id).cloned().unwrap_or_default());
                entry.member_type = 1;
                entry
            })
            .collect();
        group
    }

    /// DescribeGroups' view of a consumer group (for tools that only speak classic).
    pub fn describe_classic(&self) -> m::describe_groups_response::DescribedGroup {
        let mut group = m::describe_groups_response::DescribedGroup::default();
        group.group_id = m::GroupId(str_bytes(&self.id));
        group.group_state = str_bytes(self.state_name());
        group.protocol_type = str_bytes("consumer");
        group.authorized_operations = i32::MIN;
        group.members = self
            .members
            .iter()
            .map(|(id, member)| {
                let mut entry = m::describe_groups_response::DescribedGroupMember::default();
                entry.member_id = str_bytes(id);
                entry.group_instance_id = member.instance_id.as_deref().map(str_bytes);
                entry.client_id = str_bytes(&member.client.client_id);
                entry.client_host = str_bytes(&member.client.client_host);
                entry
            })
            .collect();
        group
    }
}

/// Owned partitions a member reports (by topic id), by topic name.
fn owned_partitions(
    owned: &[m::consumer_group_heartbeat_request::TopicPartitions],
    topics: &Topics,
) -> TopicPartitions {
    let by_id: BTreeMap<[u8; 16], &String> = topics.iter().map(|(name, t)| (t.id, name)).collect();
    let mut out = TopicPartitions::new();
    for entry in owned {
        if let Some(name) = by_id.get(entry.topic_id.as_bytes()) {
            out.entry((*name).clone())
                .or_default()
                .extend(entry.partitions.iter().copied());
        }
    }
    out
}

fn assignment_of(tps: &TopicPartitions, topics: &Topics) -> m::consumer_group_heartbeat_response::Assignment {
    use m::consumer_group_heartbeat_response as r;
    let mut assignment = r::Assignment::default();
    assignment.topic_partitions = tps
        .iter()
        .filter_map(|(topic, partitions)| {
            let info = topics.get(topic)?;
            let mut entry = r::TopicPartitions::default();
            entry.topic_id = Uuid::from_bytes(info.id);
            entry.partitions = partitions.iter().copied().collect();
            Some(entry)
        })
        .collect();
    assignment
}

/// A ConsumerGroupHeartbeat answer carrying only an error.
pub fn heartbeat_error(code: i16, message: &str) -> m::ConsumerGroupHeartbeatResponse {
    let mut response = m::ConsumerGroupHeartbeatResponse::default();
    response.error_code = code;
    response.error_message = (!message.is_empty()).then(|| str_bytes(message));
    response.member_epoch = -1;
    response
}
