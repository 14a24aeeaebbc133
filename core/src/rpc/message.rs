//! The wire encoding of one Raft [`Message`] body inside an RPC frame (the sender and
//! recipient are the frame's, the group id precedes each message). Every variant of
//! [`MessageBody`] has a one-byte tag; heartbeats and their answers also have a compact
//! fixed-size form used by the coalesced heartbeat frames.

use crate::controller::codec::{DecodeError, Put, Reader};
use crate::raft::{
    AppendRequest, AppendResponse, Entry, EntryKind, HeartbeatRequest, HeartbeatResponse, LogId, Membership,
    Message, MessageBody, SnapshotChunk, SnapshotMeta, SnapshotResponse, VoteRequest, VoteResponse,
};

const TAG_PRE_VOTE: u8 = 1;
const TAG_PRE_VOTE_RESP: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_VOTE_RESP: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_APPEND_RESP: u8 = 6;
const TAG_HEARTBEAT: u8 = 7;
const TAG_HEARTBEAT_RESP: u8 = 8;
const TAG_SNAPSHOT: u8 = 9;
const TAG_SNAPSHOT_RESP: u8 = 10;
const TAG_TIMEOUT_NOW: u8 = 11;

/// Smallest encoded entry (term, index, last index, kind, payload length).
const MIN_ENTRY_BYTES: usize = 8 + 8 + 8 + 1 + 4;

fn put_opt_log_id(out: &mut Vec<u8>, id: Option<LogId>) {
    match id {
        None => out.put_u8v(0),
        Some(id) => {
            out.put_u8v(1);
            out.put_u64v(id.term);
            out.put_u64v(id.index);
        }
    }
}

fn read_opt_log_id(r: &mut Reader<'_>) -> Result<Option<LogId>, DecodeError> {
    if r.bool()? {
        Ok(Some(LogId::new(r.u64()?, r.u64()?)))
    } else {
        Ok(None)
    }
}

fn entry_kind_tag(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Data => 0,
        EntryKind::Noop => 1,
        EntryKind::Config => 2,
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let term = r.u64()?;
    let index = r.u64()?;
    let last_index = r.u64()?;
    let kind = match r.u8()? {
        0 => EntryKind::Data,
        1 => EntryKind::Noop,
        2 => EntryKind::Config,
        other => {
            return Err(DecodeError::Invalid {
                what: "entry kind",
                value: i64::from(other),
            })
        }
    };
    let payload = r.bytes32()?;
    let entry = Entry {
        term,
        index,
        last_index,
        kind,
        payload,
    };
    if !entry.is_well_formed() {
        return Err(DecodeError::Invalid {
            what: "entry range",
            value: i64::try_from(index).unwrap_or(i64::MAX),
        });
    }
    Ok(entry)
}

/// Appends the encoding of `body`.
pub(crate) fn put_body(out: &mut Vec<u8>, body: &MessageBody) {
    match body {
        MessageBody::PreVote(v) | MessageBody::Vote(v) => {
            out.put_u8v(if matches!(body, MessageBody::PreVote(_)) {
                TAG_PRE_VOTE
            } else {
                TAG_VOTE
            });
            put_opt_log_id(out, v.last_log);
            out.put_u8v(u8::from(v.transfer));
        }
        MessageBody::PreVoteResp(v) | MessageBody::VoteResp(v) => {
            out.put_u8v(if matches!(body, MessageBody::PreVoteResp(_)) {
                TAG_PRE_VOTE_RESP
            } else {
                TAG_VOTE_RESP
            });
            out.put_u8v(u8::from(v.granted));
        }
        MessageBody::Append(a) => put_append(out, a),
        MessageBody::AppendResp(a) => put_append_resp(out, a),
        MessageBody::Heartbeat(h) => {
            out.put_u8v(TAG_HEARTBEAT);
            put_heartbeat(out, h);
        }
        MessageBody::HeartbeatResp(h) => {
            out.put_u8v(TAG_HEARTBEAT_RESP);
            put_heartbeat_resp(out, h);
        }
        MessageBody::InstallSnapshot(s) => put_snapshot_chunk(out, s),
        MessageBody::InstallSnapshotResp(s) => {
            out.put_u8v(TAG_SNAPSHOT_RESP);
            out.put_u64v(s.snapshot.term);
            out.put_u64v(s.snapshot.index);
            out.put_u64v(s.next_offset);
            out.put_u8v(u8::from(s.installed));
        }
        MessageBody::TimeoutNow => out.put_u8v(TAG_TIMEOUT_NOW),
    }
}

fn put_append(out: &mut Vec<u8>, a: &AppendRequest) {
    out.put_u8v(TAG_APPEND);
    put_opt_log_id(out, a.prev);
    out.put_opt_u64(a.commit);
    out.put_u32v(u32::try_from(a.entries.len()).unwrap_or(u32::MAX));
    for e in &a.entries {
        out.put_u64v(e.term);
        out.put_u64v(e.index);
        out.put_u64v(e.last_index);
        out.put_u8v(entry_kind_tag(e.kind));
        out.put_bytes32(&e.payload);
    }
}

fn put_append_resp(out: &mut Vec<u8>, a: &AppendResponse) {
    out.put_u8v(TAG_APPEND_RESP);
    match a {
        AppendResponse::Accepted { match_index } => {
            out.put_u8v(0);
            out.put_opt_u64(*match_index);
        }
        AppendResponse::Rejected { rejected_prev, hint } => {
            out.put_u8v(1);
            out.put_u64v(*rejected_prev);
            put_opt_log_id(out, *hint);
        }
    }
}

fn put_snapshot_chunk(out: &mut Vec<u8>, s: &SnapshotChunk) {
    out.put_u8v(TAG_SNAPSHOT);
    out.put_u64v(s.meta.last.term);
    out.put_u64v(s.meta.last.index);
    out.put_bytes32(&s.meta.membership.encode());
    out.put_u64v(s.offset);
    out.put_bytes32(&s.data);
    out.put_u8v(u8::from(s.done));
}

/// The compact heartbeat form (no tag): commit, round.
pub(crate) fn put_heartbeat(out: &mut Vec<u8>, h: &HeartbeatRequest) {
    out.put_opt_u64(h.commit);
    out.put_u64v(h.round);
}

/// The compact heartbeat-answer form (no tag): round, received.
pub(crate) fn put_heartbeat_resp(out: &mut Vec<u8>, h: &HeartbeatResponse) {
    out.put_u64v(h.round);
    out.put_opt_u64(h.received);
}

pub(crate) fn read_heartbeat(r: &mut Reader<'_>) -> Result<HeartbeatRequest, DecodeError> {
    Ok(HeartbeatRequest {
        commit: r.opt_u64()?,
        round: r.u64()?,
    })
}

pub(crate) fn read_heartbeat_resp(r: &mut Reader<'_>) -> Result<HeartbeatResponse, DecodeError> {
    Ok(HeartbeatResponse {
        round: r.u64()?,
        received: r.opt_u64()?,
    })
}

/// Reads one tagged body, refusing more than `max_entries` entries in an append.
pub(crate) fn read_body(r: &mut Reader<'_>, max_entries: usize) -> Result<MessageBody, DecodeError> {
    let tag = r.u8()?;
    Ok(match tag {
        TAG_PRE_VOTE | TAG_VOTE => {
            let v = VoteRequest {
                last_log: read_opt_log_id(r)?,
                transfer: r.bool()?,
            };
            if tag == TAG_PRE_VOTE {
                MessageBody::PreVote(v)
            } else {
                MessageBody::Vote(v)
            }
        }
        TAG_PRE_VOTE_RESP | TAG_VOTE_RESP => {
            let v = VoteResponse { granted: r.bool()? };
            if tag == TAG_PRE_VOTE_RESP {
                MessageBody::PreVoteResp(v)
            } else {
                MessageBody::VoteResp(v)
            }
        }
        TAG_APPEND => MessageBody::Append(read_append(r, max_entries)?),
        TAG_APPEND_RESP => MessageBody::AppendResp(match r.u8()? {
            0 => AppendResponse::Accepted {
                match_index: r.opt_u64()?,
            },
            1 => AppendResponse::Rejected {
                rejected_prev: r.u64()?,
                hint: read_opt_log_id(r)?,
            },
            other => {
                return Err(DecodeError::Invalid {
                    what: "append response kind",
                    value: i64::from(other),
                })
            }
        }),
        TAG_HEARTBEAT => MessageBody::Heartbeat(read_heartbeat(r)?),
        TAG_HEARTBEAT_RESP => MessageBody::HeartbeatResp(read_heartbeat_resp(r)?),
        TAG_SNAPSHOT => MessageBody::InstallSnapshot(read_snapshot_chunk(r)?),
        TAG_SNAPSHOT_RESP => MessageBody::InstallSnapshotResp(SnapshotResponse {
            snapshot: LogId::new(r.u64()?, r.u64()?),
            next_offset: r.u64()?,
            installed: r.bool()?,
        }),
        TAG_TIMEOUT_NOW => MessageBody::TimeoutNow,
        other => {
            return Err(DecodeError::Invalid {
                what: "message tag",
                value: i64::from(other),
            })
        }
    })
}

fn read_append(r: &mut Reader<'_>, max_entries: usize) -> Result<AppendRequest, DecodeError> {
    let prev = read_opt_log_id(r)?;
    let commit = r.opt_u64()?;
    let count = r.count("entries", MIN_ENTRY_BYTES)?;
    if count > max_entries {
        return Err(DecodeError::TooLarge {
            what: "entries in one append",
            value: count as u64,
            limit: max_entries as u64,
        });
    }
    let entries = (0..count).map(|_| read_entry(r)).collect::<Result<_, _>>()?;
    Ok(AppendRequest {
        prev,
        entries,
        commit,
    })
}

fn read_snapshot_chunk(r: &mut Reader<'_>) -> Result<SnapshotChunk, DecodeError> {
    let last = LogId::new(r.u64()?, r.u64()?);
    let membership = Membership::decode(&r.bytes32()?).map_err(|_| DecodeError::Invalid {
        what: "snapshot membership",
        value: 0,
    })?;
    Ok(SnapshotChunk {
        meta: SnapshotMeta { last, membership },
        offset: r.u64()?,
        data: r.bytes32()?,
        done: r.bool()?,
    })
}

/// Whether a message is sent in a compact heartbeat frame.
pub(crate) fn is_heartbeat(m: &Message) -> bool {
    matches!(m.body, MessageBody::Heartbeat(_))
}

/// Whether a message is sent in a compact heartbeat-answer frame.
pub(crate) fn is_heartbeat_resp(m: &Message) -> bool {
    matches!(m.body, MessageBody::HeartbeatResp(_))
}
