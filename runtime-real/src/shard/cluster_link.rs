//! A shard's link to the rest of the cluster: the node's broker-to-broker transport
//! ([`crate::peer::PeerNet`], shared by every shard) and, on shard 0, the durable
//! storage of the controller replica ([`crate::controller_store::ControllerStore`]).
//!
//! It executes the broker's cluster effects — [`BrokerEffect::SendPeer`],
//! [`BrokerEffect::SetPeer`], [`BrokerEffect::Controller`] — and hands shard 0 the
//! frames peers sent ([`BrokerInput::Peer`]). Sending never blocks the shard: a frame
//! the transport cannot queue is dropped and counted (Raft sends again).

use crate::controller_store::{ControllerStore, Executed};
use crate::peer::PeerNet;
use oxbow_core::broker::{BrokerEffect, BrokerInput};
use oxbow_core::controller::ControllerEffect;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Most peer frames handed to the broker per turn.
const MAX_FRAMES_PER_TURN: usize = 1024;

/// What a shard needs to be part of a cluster.
#[derive(Debug)]
pub struct ShardCluster {
    /// The node's transport.
    pub peer: Arc<PeerNet>,
    /// Shard 0: the controller's storage.
    pub controller_store: Option<ControllerStore>,
    /// The core side (controller replica on shard 0, registration, seeds).
    pub setup: oxbow_core::broker::cluster::ClusterSetup,
}

/// Counters of a shard's cluster link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames handed to the transport.
    pub frames_sent: u64,
    /// Frames the transport refused (queue full, unknown peer).
    pub frames_dropped: u64,
    /// Controller storage operations that failed.
    pub controller_store_errors: u64,
}

/// The shard side of the cluster (see the module docs).
#[derive(Debug)]
pub struct ClusterLink {
    peer: Arc<PeerNet>,
    controller_store: Option<ControllerStore>,
    stats: LinkStats,
}

impl ClusterLink {
    /// A link over the node's transport (and the controller storage on shard 0).
    pub fn new(peer: Arc<PeerNet>, controller_store: Option<ControllerStore>) -> ClusterLink {
        ClusterLink {
            peer,
            controller_store,
            stats: LinkStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The transport (for its counters).
    pub fn peer(&self) -> &PeerNet {
        &self.peer
    }

    /// Executes a cluster effect; completions go to `inputs`. Returns the effect back
    /// if it is not a cluster effect.
    pub fn execute(
        &mut self,
        effect: BrokerEffect,
        inputs: &mut VecDeque<BrokerInput>,
    ) -> Option<BrokerEffect> {
        match effect {
            BrokerEffect::SendPeer { node, bytes } => {
                match self.peer.send(node, bytes) {
                    Ok(()) => self.stats.frames_sent += 1,
                    Err(_) => self.stats.frames_dropped += 1,
                }
                None
            }
            BrokerEffect::SetPeer { node, addr } => {
                match resolve(&addr) {
                    Some(socket) => {
                        if let Err(error) = self.peer.set_peer(node, socket) {
                            tracing::error!(node, %addr, %error, "peer not added");
                        }
                    }
                    None => tracing::error!(node, %addr, "peer address does not resolve; not connecting"),
                }
                None
            }
            BrokerEffect::Controller(effect) => {
                self.execute_controller(effect, inputs);
                None
            }
            other => Some(other),
        }
    }

    fn execute_controller(&mut self, effect: ControllerEffect, inputs: &mut VecDeque<BrokerInput>) {
        let Some(store) = self.controller_store.as_mut() else {
            tracing::error!("controller effect on a shard without the controller's storage");
            return;
        };
        match store.execute(effect) {
            Ok(Executed::Input(input)) => inputs.push_back(BrokerInput::Controller(input)),
            Ok(Executed::Nothing) => {}
            Ok(Executed::Send(message)) => {
                // Core routes group 0's messages through its outbox; never expected here.
                tracing::warn!(?message, "controller message reached the storage; dropped");
            }
            Err(error) => {
                // Unanswered: the controller's Raft waits (safe), and the operator sees why.
                self.stats.controller_store_errors += 1;
                tracing::error!(%error, "controller storage failed");
            }
        }
    }

    /// Frames from peers, for the broker (shard 0).
    pub fn take_frames(&mut self, inputs: &mut VecDeque<BrokerInput>) {
        for frame in self.peer.drain(MAX_FRAMES_PER_TURN) {
            inputs.push_back(BrokerInput::Peer(frame));
        }
    }
}

/// `host:port` → the first address it resolves to.
fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}
