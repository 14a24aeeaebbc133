//! A group of the classic protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
//!
//! States: `Empty` (no members) → `PreparingRebalance` (waiting for every member to
//! (re)join; new groups wait `initial_rebalance_delay_ms` for more joiners) →
//! `CompletingRebalance` (the generation is decided; waiting for the leader's
//! assignment) → `Stable` (assignment written to the log, members heartbeat). A member
//! that misses its session timeout, leaves, or changes its protocols sends the group
//! back to `PreparingRebalance`; the generation goes up each time a join phase ends.
//!
//! The assignment is the leader client's (so range, round-robin, sticky and
//! cooperative-sticky all work): the coordinator picks a protocol every member
//! supports, hands the leader the members' metadata, and stores what the leader returns.
//! Dynamic members get their ids from the coordinator (KIP-394: a first JoinGroup with
//! no id is answered MEMBER_ID_REQUIRED with an id to use); static members
//! (`group.instance.id`, KIP-345) keep their assignment across restarts, and one that
//! rejoins a stable group with unchanged protocols gets it back without a rebalance.

use super::coordinator::Ctx;
use super::records::{ClassicGroupValue, ClassicMemberValue};
use super::{ClientInfo, GroupResult, ReplyId};
use crate::kafka::protocol::messages as m;
use crate::kafka::protocol::protocol::StrBytes;
use crate::kafka::ErrorCode;
use crate::time::Instant;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// A classic group's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicState {
    /// No members.
    Empty,
    /// Waiting for members to join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Members have their assignments.
    Stable,
}

impl ClassicState {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

#[derive(Clone, Debug)]
struct Member {
    instance_id: Option<String>,
    client: ClientInfo,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<(ReplyId, i16)>,
    sync_waiter: Option<(ReplyId, i16)>,
    session_deadline: Instant,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, meta)| meta.clone())
            .unwrap_or_default()
    }
}

/// A group of the classic protocol.
#[derive(Clone, Debug)]
pub struct ClassicGroup {
    id: String,
    state: ClassicState,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static instance id → member id.
    instances: BTreeMap<String, String>,
    /// KIP-394: ids handed out, not yet used to join, with their expiry.
    pending: BTreeMap<String, Instant>,
    /// End of the join phase (PreparingRebalance).
    join_deadline: Option<Instant>,
    /// During a new group's initial delay: the latest the delay may be extended to.
    initial_delay_cap: Option<Instant>,
    /// End of the wait for the leader's assignment (CompletingRebalance).
    sync_deadline: Option<Instant>,
    /// The leader's assignment for `generation`, waiting to be durable.
    persisting: Option<(i32, BTreeMap<String, Bytes>)>,
    /// Wall-clock ms when the group last became empty (offset retention).
    pub(super) empty_since_ms: Option<i64>,
    state_timestamp_ms: i64,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn ms(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

impl ClassicGroup {
    /// A new, empty group.
    pub fn new(id: &str, wall_ms: i64) -> ClassicGroup {
        ClassicGroup {
            id: id.to_string(),
            state: ClassicState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            instances: BTreeMap::new(),
            pending: BTreeMap::new(),
            join_deadline: None,
            initial_delay_cap: None,
            sync_deadline: None,
            persisting: None,
            empty_since_ms: Some(wall_ms),
            state_timestamp_ms: wall_ms,
        }
    }

    /// The group rebuilt from its stored value: stable with its members (who must
    /// heartbeat within their session timeouts), or empty.
    pub fn from_value(id: &str, value: &ClassicGroupValue, now: Instant) -> ClassicGroup {
        let mut group = ClassicGroup::new(id, value.state_timestamp_ms);
        group.protocol_type = Some(value.protocol_type.clone()).filter(|p| !p.is_empty());
        group.protocol = value.protocol.clone();
        group.generation = value.generation;
        group.leader = value.leader.clone();
        for stored in &value.members {
            let protocol = value.protocol.clone().unwrap_or_default();
            group.members.insert(
                stored.member_id.clone(),
                Member {
                    instance_id: stored.instance_id.clone(),
                    client: ClientInfo {
                        client_id: stored.client_id.clone(),
                        client_host: stored.client_host.clone(),
                    },
                    session_timeout_ms: stored.session_timeout_ms,
                    rebalance_timeout_ms: stored.rebalance_timeout_ms,
                    protocol_type: value.protocol_type.clone(),
                    protocols: vec![(protocol, stored.subscription.clone())],
                    assignment: stored.assignment.clone(),
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline: now + ms(stored.session_timeout_ms),
                },
            );
            if let Some(instance) = &stored.instance_id {
                group.instances.insert(instance.clone(), stored.member_id.clone());
            }
        }
        if group.members.is_empty() {
            group.state = ClassicState::Empty;
        } else {
            group.state = ClassicState::Stable;
            group.empty_since_ms = None;
        }
        group
    }

    /// The value to store: members with their assignments (the one being made durable
    /// if a leader's assignment is in flight).
    pub fn to_value(&self) -> ClassicGroupValue {
        let pending = self.persisting.as_ref().map(|(_, a)| a);
        let protocol = self.protocol.clone().unwrap_or_default();
        ClassicGroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|(id, member)| ClassicMemberValue {
                    member_id: id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client.client_id.clone(),
                    client_host: member.client.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata_for(&protocol),
                    assignment: pending
                        .and_then(|a| a.get(id).cloned())
                        .unwrap_or_else(|| member.assignment.clone()),
                })
                .collect(),
        }
    }

    /// The state.
    pub fn state(&self) -> ClassicState {
        self.state
    }

    /// The generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The protocol type ("" if none yet).
    pub fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or("")
    }

    /// Whether the group has members.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Whether `member_id` is a member.
    pub fn is_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Topics the members of a `consumer` group subscribe to, when the chosen protocol's
    /// metadata can be read (for OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC).
    pub fn subscribed_topics(&self) -> Vec<String> {
        if self.protocol_type() != "consumer" {
            return Vec::new();
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut topics: Vec<String> = self
            .members
            .values()
            .flat_map(|m| consumer_subscription_topics(&m.metadata_for(&protocol)))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The earliest deadline of the group.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.session_deadline);
        let pending = self.pending.values().copied();
        sessions
            .chain(pending)
            .chain(self.join_deadline)
            .chain(self.sync_deadline)
            .min()
    }

    /// Answers every waiting request with `code` (the coordinator is going away).
    pub fn abandon(&mut self, ctx: &mut Ctx<'_>, code: i16) {
        for member in self.members.values_mut() {
            if let Some((reply, version)) = member.join_waiter.take() {
                ctx.reply(reply, GroupResult::Join(join_error(code, "", version)));
            }
            if let Some((reply, _)) = member.sync_waiter.take() {
                ctx.reply(reply, GroupResult::Sync(sync_error(code)));
            }
        }
    }

    fn transition(&mut self, ctx: &Ctx<'_>, state: ClassicState) {
        self.state = state;
        self.state_timestamp_ms = ctx.wall_ms;
        if state == ClassicState::Empty {
            self.empty_since_ms = Some(ctx.wall_ms);
        } else {
            self.empty_since_ms = None;
        }
    }

    /// JoinGroup.
    pub fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        reply: ReplyId,
        request: &m::JoinGroupRequest,
        version: i16,
        client: &ClientInfo,
    ) {
        let member_id = request.member_id.as_str().to_string();
        let fail = |ctx: &mut Ctx<'_>, code: ErrorCode| {
            ctx.reply(reply, GroupResult::Join(join_error(code.0, &member_id, version)));
        };
        let config = ctx.config;
        if request.session_timeout_ms < config.min_session_timeout_ms
            || request.session_timeout_ms > config.max_session_timeout_ms
        {
            return fail(ctx, ErrorCode::INVALID_SESSION_TIMEOUT);
        }
        let protocol_type = request.protocol_type.as_str();
        if protocol_type.is_empty() || request.protocols.is_empty() {
            return fail(ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        if !self.supports(protocol_type, &request.protocols) {
            return fail(ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        }
        let instance_id = request.group_instance_id.as_ref().map(|s| s.as_str().to_string());
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect();
        let rebalance_timeout_ms = if request.rebalance_timeout_ms > 0 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        };
        let member = Member {
            instance_id: instance_id.clone(),
            client: client.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: protocol_type.to_string(),
            protocols,
            assignment: Bytes::new(),
            join_waiter: Some((reply, version)),
            sync_waiter: None,
            session_deadline: ctx.now + ms(request.session_timeout_ms),
        };
        if member_id.is_empty() {
            self.join_unknown(ctx, reply, version, member)
        } else {
            self.join_known(ctx, reply, version, member_id, member)
        }
    }

    /// Whether a member with these protocols can join (same type, a protocol in common
    /// with every member).
    fn supports(
        &self,
        protocol_type: &str,
        protocols: &[m::join_group_request::JoinGroupRequestProtocol],
    ) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|p| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(name, _)| name == p.name.as_str()))
        })
    }

    fn join_unknown(&mut self, ctx: &mut Ctx<'_>, reply: ReplyId, version: i16, member: Member) {
        if let Some(instance) = member.instance_id.clone() {
            let new_id = ctx.new_member_id(&instance);
            if let Some(old_id) = self.instances.get(&instance).cloned() {
                return self.replace_static_member(ctx, reply, version, old_id, new_id, member);
            }
            if self.members.len() + self.pending.len() >= ctx.config.max_size {
                ctx.reply(
                    reply,
                    GroupResult::Join(join_error(ErrorCode::GROUP_MAX_SIZE_REACHED.0, "", version)),
                );
                return;
            }
            self.instances.insert(instance, new_id.clone());
            self.add_member(ctx, new_id, member);
            return;
        }
        if self.members.len() + self.pending.len() >= ctx.config.max_size {
            ctx.reply(
                reply,
                GroupResult::Join(join_error(ErrorCode::GROUP_MAX_SIZE_REACHED.0, "", version)),
            );
            return;
        }
        let new_id = ctx.new_member_id(&member.client.client_id);
        if version >= 4 {
            // KIP-394: hand out the id; the member joins with it.
            self.pending
                .insert(new_id.clone(), ctx.now + ms(member.session_timeout_ms));
            ctx.reply(
                reply,
                GroupResult::Join(join_error(ErrorCode::MEMBER_ID_REQUIRED.0, &new_id, version)),
            );
            return;
        }
        self.add_member(ctx, new_id, member);
    }

    fn join_known(
        &mut self,
        ctx: &mut Ctx<'_>,
        reply: ReplyId,
        version: i16,
        member_id: String,
        member: Member,
    ) {
        if let Some(instance) = &member.instance_id {
            match self.instances.get(instance) {
                Some(known) if *known != member_id => {
                    ctx.reply(
                        reply,
                        GroupResult::Join(join_error(ErrorCode::FENCED_INSTANCE_ID.0, &member_id, version)),
                    );
                    return;
                }
                None if !self.members.contains_key(&member_id) => {
                    ctx.reply(
                        reply,
                        GroupResult::Join(join_error(ErrorCode::UNKNOWN_MEMBER_ID.0, &member_id, version)),
                    );
                    return;
                }
                _ => {}
            }
        }
        if self.pending.remove(&member_id).is_some() {
            self.add_member(ctx, member_id, member);
            return;
        }
        let Some(existing) = self.members.get_mut(&member_id) else {
            ctx.reply(
                reply,
                GroupResult::Join(join_error(ErrorCode::UNKNOWN_MEMBER_ID.0, &member_id, version)),
            );
            return;
        };
        let unchanged = existing.protocols == member.protocols;
        if let Some((old_reply, old_version)) = existing.join_waiter.take() {
            // A retried join: the earlier request gets no generation.
            ctx.reply(
                old_reply,
                GroupResult::Join(join_error(
                    ErrorCode::UNKNOWN_MEMBER_ID.0,
                    &member_id,
                    old_version,
                )),
            );
        }
        existing.protocols = member.protocols;
        existing.session_timeout_ms = member.session_timeout_ms;
        existing.rebalance_timeout_ms = member.rebalance_timeout_ms;
        existing.client = member.client;
        existing.session_deadline = member.session_deadline;
        match self.state {
            ClassicState::PreparingRebalance => {
                existing.join_waiter = Some((reply, version));
                self.maybe_complete_join(ctx);
            }
            ClassicState::CompletingRebalance | ClassicState::Stable
                if unchanged && self.leader.as_deref() != Some(member_id.as_str()) =>
            {
                // Nothing changed: answer with the current generation.
                let response = self.join_response(&member_id, version);
                ctx.reply(reply, GroupResult::Join(response));
            }
            _ => {
                existing.join_waiter = Some((reply, version));
                self.prepare_rebalance(ctx);
            }
        }
    }

    /// A static member rejoined under a new id: the old id is fenced, the assignment
    /// carries over, and a stable group with unchanged protocols does not rebalance.
    fn replace_static_member(
        &mut self,
        ctx: &mut Ctx<'_>,
        reply: ReplyId,
        version: i16,
        old_id: String,
        new_id: String,
        mut member: Member,
    ) {
        let Some(mut old) = self.members.remove(&old_id) else {
            // The mapping outlived its member (should not happen): join as new.
            if let Some(instance) = &member.instance_id {
                self.instances.insert(instance.clone(), new_id.clone());
            }
            return self.add_member(ctx, new_id, member);
        };
        if let Some((r, v)) = old.join_waiter.take() {
            ctx.reply(
                r,
                GroupResult::Join(join_error(ErrorCode::FENCED_INSTANCE_ID.0, &old_id, v)),
            );
        }
        if let Some((r, _)) = old.sync_waiter.take() {
            ctx.reply(r, GroupResult::Sync(sync_error(ErrorCode::FENCED_INSTANCE_ID.0)));
        }
        let unchanged = old.protocols == member.protocols;
        member.assignment = old.assignment.clone();
        if let Some(instance) = &member.instance_id {
            self.instances.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            ClassicState::Stable if unchanged => {
                member.join_waiter = None;
                self.members.insert(new_id.clone(), member);
                let mut response = self.join_response(&new_id, version);
                // The rejoining leader must not reassign: it gets no member list.
                response.members.clear();
                if version >= 9 {
                    response.skip_assignment = false;
                }
                ctx.reply(reply, GroupResult::Join(response));
                // The new id must be durable, or a failover would fence the member.
                ctx.persist(&self.id);
            }
            _ => {
                self.members.insert(new_id, member);
                match self.state {
                    ClassicState::PreparingRebalance => self.maybe_complete_join(ctx),
                    _ => self.prepare_rebalance(ctx),
                }
            }
        }
    }

    fn add_member(&mut self, ctx: &mut Ctx<'_>, member_id: String, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        self.members.insert(member_id, member);
        match self.state {
            ClassicState::PreparingRebalance => self.maybe_complete_join(ctx),
            _ => self.prepare_rebalance(ctx),
        }
    }

    /// Starts a join phase (or restarts the wait for joiners).
    fn prepare_rebalance(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == ClassicState::CompletingRebalance {
            // Members waiting for an assignment that will not come rejoin.
            for member in self.members.values_mut() {
                if let Some((r, _)) = member.sync_waiter.take() {
                    ctx.reply(
                        r,
                        GroupResult::Sync(sync_error(ErrorCode::REBALANCE_IN_PROGRESS.0)),
                    );
                }
            }
        }
        let was_empty = self.state == ClassicState::Empty;
        self.persisting = None;
        self.sync_deadline = None;
        self.transition(ctx, ClassicState::PreparingRebalance);
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        if was_empty {
            // A new group waits a little for the others of a starting fleet; each new
            // joiner extends the wait, up to the rebalance timeout.
            let delay = ms(ctx
                .config
                .initial_rebalance_delay_ms
                .min(rebalance_timeout.max(0)));
            self.join_deadline = Some(ctx.now + delay);
            self.initial_delay_cap = Some(ctx.now + ms(rebalance_timeout));
        } else {
            self.join_deadline = Some(ctx.now + ms(rebalance_timeout));
            self.initial_delay_cap = None;
            self.maybe_complete_join(ctx);
        }
    }

    /// Ends the join phase once every member has rejoined (not during a new group's
    /// initial delay, which only its deadline ends).
    fn maybe_complete_join(&mut self, ctx: &mut Ctx<'_>) {
        if self.state != ClassicState::PreparingRebalance {
            return;
        }
        if let Some(cap) = self.initial_delay_cap {
            let delay = ms(ctx.config.initial_rebalance_delay_ms);
            self.join_deadline = self.join_deadline.map(|d| d.max(ctx.now + delay).min(cap));
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        if all_joined && self.pending.is_empty() {
            self.complete_join(ctx);
        }
    }

    fn complete_join(&mut self, ctx: &mut Ctx<'_>) {
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.join_deadline = None;
        self.initial_delay_cap = None;
        self.generation += 1;
        ctx.metrics.rebalances += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(ctx, ClassicState::Empty);
            ctx.persist(&self.id);
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.transition(ctx, ClassicState::CompletingRebalance);
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.sync_deadline = Some(ctx.now + ms(rebalance_timeout));
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let waiter = self.members.get_mut(&id).and_then(|m| m.join_waiter.take());
            if let Some((reply, version)) = waiter {
                let response = self.join_response(&id, version);
                ctx.reply(reply, GroupResult::Join(response));
            }
            if let Some(member) = self.members.get_mut(&id) {
                member.session_deadline = ctx.now + ms(member.session_timeout_ms);
            }
        }
    }

    /// The protocol every member supports with the most first-preference votes.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        // Most votes; ties go to the first member's preference order.
        let best = candidates.iter().max_by_key(|c| {
            (
                votes.get(**c).copied().unwrap_or(0),
                std::cmp::Reverse(self.rank(c)),
            )
        })?;
        Some((*best).clone())
    }

    fn rank(&self, protocol: &str) -> usize {
        self.members
            .values()
            .next()
            .and_then(|m| m.protocols.iter().position(|(n, _)| n == protocol))
            .unwrap_or(usize::MAX)
    }

    fn join_response(&self, member_id: &str, version: i16) -> m::JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let mut response = m::JoinGroupResponse::default();
        response.generation_id = self.generation;
        response.protocol_type = self.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = Some(str_bytes(&protocol));
        response.leader = str_bytes(self.leader.as_deref().unwrap_or(""));
        response.member_id = str_bytes(member_id);
        if self.leader.as_deref() == Some(member_id) {
            response.members = self
                .members
                .iter()
                .map(|(id, m)| {
                    let mut entry = m::join_group_response::JoinGroupResponseMember::default();
                    entry.member_id = str_bytes(id);
                    entry.group_instance_id = if version >= 5 {
                        m.instance_id.as_deref().map(str_bytes)
                    } else {
                        None
                    };
                    entry.metadata = m.metadata_for(&protocol);
                    entry
                })
                .collect();
        }
        response
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            match self.instances.get(instance) {
                Some(known) if known != member_id => return Err(ErrorCode::FENCED_INSTANCE_ID),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    /// SyncGroup.
    pub fn sync(&mut self, ctx: &mut Ctx<'_>, reply: ReplyId, request: &m::SyncGroupRequest, version: i16) {
        let member_id = request.member_id.as_str();
        let instance = request.group_instance_id.as_ref().map(|s| s.as_str());
        let fail =
            |ctx: &mut Ctx<'_>, code: ErrorCode| ctx.reply(reply, GroupResult::Sync(sync_error(code.0)));
        if let Err(code) = self.check_member(member_id, instance) {
            return fail(ctx, code);
        }
        if request.generation_id != self.generation {
            return fail(ctx, ErrorCode::ILLEGAL_GENERATION);
        }
        if version >= 5 {
            let type_ok = request
                .protocol_type
                .as_ref()
                .is_none_or(|t| Some(t.as_str()) == self.protocol_type.as_deref());
            let name_ok = request
                .protocol_name
                .as_ref()
                .is_none_or(|n| Some(n.as_str()) == self.protocol.as_deref());
            if !type_ok || !name_ok {
                return fail(ctx, ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        match self.state {
            ClassicState::Empty => fail(ctx, ErrorCode::UNKNOWN_MEMBER_ID),
            ClassicState::PreparingRebalance => fail(ctx, ErrorCode::REBALANCE_IN_PROGRESS),
            ClassicState::Stable => {
                let member = &self.members[member_id];
                let mut response = m::SyncGroupResponse::default();
                response.assignment = member.assignment.clone();
                response.protocol_type = self.protocol_type.as_deref().map(str_bytes);
                response.protocol_name = self.protocol.as_deref().map(str_bytes);
                ctx.reply(reply, GroupResult::Sync(response));
            }
            ClassicState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(member_id);
                if let Some(member) = self.members.get_mut(member_id) {
                    if let Some((old, _)) = member.sync_waiter.replace((reply, version)) {
                        ctx.reply(
                            old,
                            GroupResult::Sync(sync_error(ErrorCode::REBALANCE_IN_PROGRESS.0)),
                        );
                    }
                    member.session_deadline = ctx.now + ms(member.session_timeout_ms);
                }
                if is_leader && self.persisting.is_none() {
                    let assignments: BTreeMap<String, Bytes> = request
                        .assignments
                        .iter()
                        .filter(|a| self.members.contains_key(a.member_id.as_str()))
                        .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
                        .collect();
                    self.persisting = Some((self.generation, assignments));
                    ctx.persist(&self.id);
                }
            }
        }
    }

    /// The group's stored value for `generation` is durable (or failed to be).
    pub fn on_persisted(&mut self, ctx: &mut Ctx<'_>, generation: i32, result: Result<(), i16>) {
        let Some((persisted_generation, assignments)) = self.persisting.take() else {
            return;
        };
        if persisted_generation != generation
            || self.generation != generation
            || self.state != ClassicState::CompletingRebalance
        {
            return;
        }
        match result {
            Ok(()) => {
                for (id, member) in self.members.iter_mut() {
                    member.assignment = assignments.get(id).cloned().unwrap_or_default();
                }
                self.sync_deadline = None;
                self.transition(ctx, ClassicState::Stable);
                let protocol_type = self.protocol_type.clone();
                let protocol = self.protocol.clone();
                for member in self.members.values_mut() {
                    member.session_deadline = ctx.now + ms(member.session_timeout_ms);
                    if let Some((reply, _)) = member.sync_waiter.take() {
                        let mut response = m::SyncGroupResponse::default();
                        response.assignment = member.assignment.clone();
                        response.protocol_type = protocol_type.as_deref().map(str_bytes);
                        response.protocol_name = protocol.as_deref().map(str_bytes);
                        ctx.reply(reply, GroupResult::Sync(response));
                    }
                }
            }
            Err(code) => {
                for member in self.members.values_mut() {
                    if let Some((reply, _)) = member.sync_waiter.take() {
                        ctx.reply(reply, GroupResult::Sync(sync_error(code)));
                    }
                }
                self.prepare_rebalance(ctx);
            }
        }
    }

    /// Heartbeat.
    pub fn heartbeat(&mut self, ctx: &mut Ctx<'_>, request: &m::HeartbeatRequest) -> i16 {
        let member_id = request.member_id.as_str();
        let instance = request.group_instance_id.as_ref().map(|s| s.as_str());
        if let Err(code) = self.check_member(member_id, instance) {
            return code.0;
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline = ctx.now + ms(member.session_timeout_ms);
        }
        match self.state {
            ClassicState::Empty => ErrorCode::UNKNOWN_MEMBER_ID.0,
            ClassicState::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS.0,
            _ if request.generation_id != self.generation => ErrorCode::ILLEGAL_GENERATION.0,
            _ => 0,
        }
    }

    /// LeaveGroup (v0–2: one member by id; v3+: a batch by id or instance id).
    pub fn leave(
        &mut self,
        ctx: &mut Ctx<'_>,
        request: &m::LeaveGroupRequest,
        version: i16,
    ) -> m::LeaveGroupResponse {
        let mut response = m::LeaveGroupResponse::default();
        let leaving: Vec<(String, Option<String>)> = if version < 3 {
            vec![(request.member_id.as_str().to_string(), None)]
        } else {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_string(),
                        m.group_instance_id.as_ref().map(|s| s.as_str().to_string()),
                    )
                })
                .collect()
        };
        let mut changed = false;
        for (member_id, instance) in leaving {
            let code = self.leave_one(ctx, &member_id, instance.as_deref(), &mut changed);
            if version < 3 {
                response.error_code = code;
            } else {
                let mut entry = m::leave_group_response::MemberResponse::default();
                entry.member_id = str_bytes(&member_id);
                entry.group_instance_id = instance.as_deref().map(str_bytes);
                entry.error_code = code;
                response.members.push(entry);
            }
        }
        if changed {
            self.after_departure(ctx);
        }
        response
    }

    fn leave_one(
        &mut self,
        ctx: &mut Ctx<'_>,
        member_id: &str,
        instance: Option<&str>,
        changed: &mut bool,
    ) -> i16 {
        let id = match instance {
            Some(instance) => match self.instances.get(instance) {
                None => return ErrorCode::UNKNOWN_MEMBER_ID.0,
                // An empty member id with an instance id: an admin removing a static member.
                Some(known) if !member_id.is_empty() && known != member_id => {
                    return ErrorCode::FENCED_INSTANCE_ID.0
                }
                Some(known) => known.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return 0;
        }
        match self.members.get_mut(&id) {
            None => ErrorCode::UNKNOWN_MEMBER_ID.0,
            Some(member) => {
                if let Some((r, v)) = member.join_waiter.take() {
                    ctx.reply(
                        r,
                        GroupResult::Join(join_error(ErrorCode::UNKNOWN_MEMBER_ID.0, &id, v)),
                    );
                }
                if let Some((r, _)) = member.sync_waiter.take() {
                    ctx.reply(r, GroupResult::Sync(sync_error(ErrorCode::UNKNOWN_MEMBER_ID.0)));
                }
                self.remove_member(&id);
                *changed = true;
                0
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(member) = self.members.remove(id) {
            if let Some(instance) = member.instance_id {
                if self.instances.get(&instance).map(String::as_str) == Some(id) {
                    self.instances.remove(&instance);
                }
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// After members left or expired: rebalance, or finish the join phase.
    fn after_departure(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            ClassicState::PreparingRebalance => {
                if self.members.is_empty() {
                    self.complete_join(ctx);
                } else {
                    self.maybe_complete_join(ctx);
                }
            }
            ClassicState::Empty => {}
            _ => {
                if self.members.is_empty() {
                    self.prepare_rebalance(ctx);
                    self.complete_join(ctx);
                } else {
                    self.prepare_rebalance(ctx);
                }
            }
        }
    }

    /// Runs the group's deadlines.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        self.pending.retain(|_, deadline| *deadline > now);
        if self.state == ClassicState::PreparingRebalance && self.join_deadline.is_some_and(|d| d <= now) {
            self.complete_join(ctx);
        }
        if self.state == ClassicState::CompletingRebalance && self.sync_deadline.is_some_and(|d| d <= now) {
            // The leader never sent the assignment (or members never synced): the ones
            // not waiting for it are out, and the group rebalances.
            let lagging: Vec<String> = self
                .members
                .iter()
                .filter(|(id, m)| m.sync_waiter.is_none() || self.leader.as_deref() == Some(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect();
            let leader_synced = self
                .leader
                .as_ref()
                .and_then(|l| self.members.get(l))
                .is_some_and(|m| m.sync_waiter.is_some());
            for id in lagging {
                if leader_synced && self.leader.as_deref() == Some(id.as_str()) {
                    continue;
                }
                self.remove_member(&id);
            }
            self.sync_deadline = None;
            self.after_departure(ctx);
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && m.session_deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                if let Some(member) = self.members.get_mut(id) {
                    if let Some((r, _)) = member.sync_waiter.take() {
                        ctx.reply(r, GroupResult::Sync(sync_error(ErrorCode::UNKNOWN_MEMBER_ID.0)));
                    }
                }
                self.remove_member(id);
            }
            self.after_departure(ctx);
        }
    }

    /// Checks an offset commit against the group: `Ok(())` to write it.
    pub fn check_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if generation < 0 && member_id.is_empty() {
            // A simple commit: only into a group without members.
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(ErrorCode::UNKNOWN_MEMBER_ID)
            };
        }
        self.check_member(member_id, instance)?;
        match self.state {
            ClassicState::PreparingRebalance | ClassicState::CompletingRebalance => {
                Err(ErrorCode::REBALANCE_IN_PROGRESS)
            }
            _ if generation != self.generation => Err(ErrorCode::ILLEGAL_GENERATION),
            _ => Ok(()),
        }
    }

    /// A commit by a member counts as a heartbeat.
    pub fn touch(&mut self, now: Instant, member_id: &str) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline = now + ms(member.session_timeout_ms);
        }
    }

    /// DescribeGroups' entry.
    pub fn describe(&self) -> m::describe_groups_response::DescribedGroup {
        let mut group = m::describe_groups_response::DescribedGroup::default();
        group.group_id = m::GroupId(str_bytes(&self.id));
        group.group_state = str_bytes(self.state.name());
        group.protocol_type = str_bytes(self.protocol_type());
        let protocol = self.protocol.clone().unwrap_or_default();
        group.protocol_data = str_bytes(&protocol);
        group.authorized_operations = i32::MIN;
        let stable = self.state == ClassicState::Stable;
        group.members = self
            .members
            .iter()
            .map(|(id, member)| {
                let mut entry = m::describe_groups_response::DescribedGroupMember::default();
                entry.member_id = str_bytes(id);
                entry.group_instance_id = member.instance_id.as_deref().map(str_bytes);
                entry.client_id = str_bytes(&member.client.client_id);
                entry.client_host = str_bytes(&member.client.client_host);
                entry.member_metadata = member.metadata_for(&protocol);
                if stable {
                    entry.member_assignment = member.assignment.clone();
                }
                entry
            })
            .collect();
        group
    }
}

/// A JoinGroup answer carrying only an error (and, for MEMBER_ID_REQUIRED, the id).
pub fn join_error(code: i16, member_id: &str, version: i16) -> m::JoinGroupResponse {
    let mut response = m::JoinGroupResponse::default();
    response.error_code = code;
    response.generation_id = -1;
    response.member_id = str_bytes(member_id);
    // Before v7 the protocol name is not nullable; an empty name is valid at every
    // version.
    let _ = version;
    response.protocol_name = Some(StrBytes::default());
    response
}

/// A SyncGroup answer carrying only an error.
pub fn sync_error(code: i16) -> m::SyncGroupResponse {
    let mut response = m::SyncGroupResponse::default();
    response.error_code = code;
    response
}

/// The topics of a consumer-protocol subscription blob (`ConsumerProtocolSubscription`:
/// version i16, then an array of topic strings); empty if it cannot be read.
pub fn consumer_subscription_topics(metadata: &[u8]) -> Vec<String> {
    let read = || -> Option<Vec<String>> {
        let count = i32::from_be_bytes(metadata.get(2..6)?.try_into().ok()?);
        let mut at = 6usize;
        let mut topics = Vec::new();
        for _ in 0..count.max(0) {
            let len = i16::from_be_bytes(metadata.get(at..at + 2)?.try_into().ok()?);
            at += 2;
            let len = usize::try_from(len).ok()?;
            topics.push(String::from_utf8(metadata.get(at..at + len)?.to_vec()).ok()?);
            at += len;
        }
        Some(topics)
    };
    read().unwrap_or_default()
}
