//! Elections: election timeouts with priority relaxation, pre-vote, vote requests and
//! answers, becoming follower or candidate, and TimeoutNow (leadership transfer).
//!
//! * A voter with priority below the current target waits; each election timeout that
//!   passes without a leader lowers the target one step (see
//!   `RaftConfig::priority_relax_steps`), so the preferred voter wins when it is alive and
//!   someone else wins when it is not. Priority 0 never campaigns.
//! * A node removed (or demoted) by a configuration entry it has not seen committed
//!   campaigns with its former priority, counting only the new configuration's voters
//!   (`Raft::campaign_priority`, dissertation §4.2.2).
//! * Pre-vote asks for votes in `term + 1` without changing any state; only a majority
//!   of pre-votes lets a node bump its term. A follower that heard its leader within the
//!   election timeout ignores (pre-)vote requests (the lease), unless they come from a
//!   leadership transfer.
//! * A vote is granted, and a candidate counts its own vote, only once the hard state
//!   recording it is durable (messages are held until then, see `Raft::send`).

use crate::time::Instant;

use super::message::{MessageBody, VoteRequest, VoteResponse};
use super::node::Raft;
use super::stats::DropReason;
use super::types::{log_up_to_date, HardState, NodeId, Role, Term};

/// How a campaign starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CampaignKind {
    PreVote,
    Election,
    Transfer,
}

impl Raft {
    /// Starts an election now (operator or test hook; a pre-vote round first when
    /// pre-vote is on). Does nothing on a leader or on a node that may not lead.
    pub fn campaign(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.role != Role::Leader && self.can_lead() {
            let kind = if self.cfg.pre_vote {
                CampaignKind::PreVote
            } else {
                CampaignKind::Election
            };
            self.start_campaign(now, kind);
        }
        self.report_role();
    }

    pub(crate) fn on_election_timeout(&mut self, now: Instant) {
        let mine = self.campaign_priority();
        if mine < self.target_priority {
            self.stats.priority_waits += 1;
            let max = self.configs.active().max_priority();
            let step = max.div_ceil(self.cfg.priority_relax_steps).max(1);
            self.target_priority = self.target_priority.saturating_sub(step).max(1);
            self.reset_election_timer(now);
            return;
        }
        let kind = if self.cfg.pre_vote {
            CampaignKind::PreVote
        } else {
            CampaignKind::Election
        };
        self.start_campaign(now, kind);
    }

    pub(crate) fn start_campaign(&mut self, now: Instant, kind: CampaignKind) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        self.votes.clear();
        self.leader = None;
        self.reset_retry_timer(now);
        let last_log = self.log.last_log_id();
        let (term, body): (Term, fn(VoteRequest) -> MessageBody) = match kind {
            CampaignKind::PreVote => {
                self.role = Role::PreCandidate;
                self.stats.pre_votes_started += 1;
                self.votes.insert(self.id, true);
                (self.hs.term + 1, MessageBody::PreVote)
            }
            CampaignKind::Election | CampaignKind::Transfer => {
                self.role = Role::Candidate;
                self.stats.elections_started += 1;
                self.set_hard_state(HardState {
                    term: self.hs.term + 1,
                    vote: Some(self.id),
                });
                self.follower = Default::default();
                (self.hs.term, MessageBody::Vote)
            }
        };
        let transfer = kind == CampaignKind::Transfer;
        for peer in self.quorum_voters() {
            if peer != self.id {
                self.send_with_term(peer, term, body(VoteRequest { last_log, transfer }));
            }
        }
        self.tally_votes(now, kind == CampaignKind::PreVote);
    }

    pub(crate) fn on_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        req: VoteRequest,
        pre: bool,
    ) {
        let can_vote = self.hs.vote == Some(from)
            || (self.hs.vote.is_none() && self.leader.is_none())
            || (pre && term > self.hs.term);
        let grant = can_vote && log_up_to_date(req.last_log, self.log.last_log_id());
        if pre {
            let reply_term = if grant { term } else { self.hs.term };
            self.send_with_term(
                from,
                reply_term,
                MessageBody::PreVoteResp(VoteResponse { granted: grant }),
            );
            return;
        }
        if grant {
            self.set_hard_state(HardState {
                term: self.hs.term,
                vote: Some(from),
            });
            self.reset_election_timer(now);
        }
        self.send(from, MessageBody::VoteResp(VoteResponse { granted: grant }));
    }

    pub(crate) fn on_vote_response(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        r: VoteResponse,
        pre: bool,
    ) {
        let expected = if pre {
            self.role == Role::PreCandidate
                && (term == self.hs.term + 1 || (!r.granted && term == self.hs.term))
        } else {
            self.role == Role::Candidate && term == self.hs.term
        };
        if !expected {
            return self.drop_input(DropReason::StaleResponse);
        }
        if !self.configs.active().is_voter(from) {
            return self.drop_input(DropReason::UnknownSender);
        }
        self.votes.insert(from, r.granted);
        self.tally_votes(now, pre);
    }

    /// Counts (pre-)votes; wins or gives up when a majority decided.
    pub(crate) fn tally_votes(&mut self, now: Instant, pre: bool) {
        let voters = self.configs.active().voters().clone();
        let quorum = self.configs.active().quorum();
        let own_counts = pre
            || self.durable_hs
                == HardState {
                    term: self.hs.term,
                    vote: Some(self.id),
                };
        let mut granted = 0;
        let mut rejected = 0;
        for id in voters.keys() {
            match self.votes.get(id) {
                Some(true) if *id != self.id || own_counts => granted += 1,
                Some(false) => rejected += 1,
                _ => {}
            }
        }
        if !pre && own_counts && voters.contains_key(&self.id) && !self.votes.contains_key(&self.id) {
            granted += 1;
        }
        if granted >= quorum {
            if pre {
                self.start_campaign(now, CampaignKind::Election);
            } else {
                self.become_leader(now);
            }
        } else if rejected >= quorum {
            self.role = Role::Follower;
            self.votes.clear();
        }
    }

    /// Steps down to follower in `term` (bumping the term clears the vote).
    pub(crate) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        self.flush();
        if term > self.hs.term {
            self.set_hard_state(HardState { term, vote: None });
            self.follower = Default::default();
        }
        if self.leader_state.take().is_some() {
            self.leader_contact = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer(now);
    }

    pub(crate) fn on_timeout_now(&mut self, now: Instant, from: NodeId) {
        if self.leader != Some(from) && self.role == Role::Follower && self.leader.is_some() {
            return self.drop_input(DropReason::StaleResponse);
        }
        if self.role == Role::Leader || !self.can_lead() {
            return self.drop_input(DropReason::CannotLead);
        }
        self.start_campaign(now, CampaignKind::Transfer);
    }
}
