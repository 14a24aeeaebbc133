//! The Kafka wire layer: frames in, typed requests out; typed responses in, frames out.
//!
//! Sans-IO like the rest of core. The runtime owns the socket; per connection it feeds
//! bytes to a [`FrameDecoder`], and for each frame:
//!
//! ```text
//! match decode_request(frame) {
//!     Ok(decoded) => { /* broker: decoded.header + decoded.request → Response */
//!                      if decoded.expects_response() {   // not for acks=0 Produce
//!                          encode_response(&decoded.header, &response) → bytes to send } }
//!     Err(error)  => match error.reply() { Some(bytes) => send and carry on,
//!                                          None => close the connection }
//! }
//! ```
//!
//! * [`frame`] — size-prefixed framing with a bounded buffer and a maximum frame size.
//! * [`versions`] — the single table of supported APIs and versions.
//! * [`request`] — request header and body decoding into [`Request`].
//! * [`response`] — [`Response`] encoding with the right header version, and error
//!   responses for any request ([`error_response`]).
//! * [`vectored`] — responses as chunk lists ([`ResponseFrame`]), so a Fetch response's
//!   record sets are sent from their read buffers, not copied into the frame.
//! * [`schema`] — bounds check of request bodies before `kafka-protocol` allocates.
//! * [`error`] — [`ErrorCode`] and the layer's error types.
//!
//! Message types are `kafka-protocol`'s (re-exported as [`protocol`]), so the broker
//! builds responses with the same structs the crate encodes.

/// Calls `$callback!` with the table of supported request/response pairs. Each row is
/// `Variant(RequestType, ResponseType)`, where `Variant` is also the `ApiKey` variant.
/// Adding an API: one row here, its row in [`versions::API_TABLE`] set to supported,
/// its schema in [`schema`], and its error response in [`response`]. A row whose API is
/// still planned in the table is decodable but refused by the decoder: supporting it is
/// then the one-line flip of its status.
macro_rules! with_supported_apis {
    ($callback:ident) => {
        $callback! {
            Produce(ProduceRequest, ProduceResponse),
            Fetch(FetchRequest, FetchResponse),
            ListOffsets(ListOffsetsRequest, ListOffsetsResponse),
            Metadata(MetadataRequest, MetadataResponse),
            OffsetCommit(OffsetCommitRequest, OffsetCommitResponse),
            OffsetFetch(OffsetFetchRequest, OffsetFetchResponse),
            FindCoordinator(FindCoordinatorRequest, FindCoordinatorResponse),
            JoinGroup(JoinGroupRequest, JoinGroupResponse),
            Heartbeat(HeartbeatRequest, HeartbeatResponse),
            LeaveGroup(LeaveGroupRequest, LeaveGroupResponse),
            SyncGroup(SyncGroupRequest, SyncGroupResponse),
            DescribeGroups(DescribeGroupsRequest, DescribeGroupsResponse),
            ListGroups(ListGroupsRequest, ListGroupsResponse),
            ApiVersions(ApiVersionsRequest, ApiVersionsResponse),
            CreateTopics(CreateTopicsRequest, CreateTopicsResponse),
            DeleteTopics(DeleteTopicsRequest, DeleteTopicsResponse),
            DeleteRecords(DeleteRecordsRequest, DeleteRecordsResponse),
            InitProducerId(InitProducerIdRequest, InitProducerIdResponse),
            OffsetForLeaderEpoch(OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse),
            AddPartitionsToTxn(AddPartitionsToTxnRequest, AddPartitionsToTxnResponse),
            AddOffsetsToTxn(AddOffsetsToTxnRequest, AddOffsetsToTxnResponse),
            EndTxn(EndTxnRequest, EndTxnResponse),
            WriteTxnMarkers(WriteTxnMarkersRequest, WriteTxnMarkersResponse),
            TxnOffsetCommit(TxnOffsetCommitRequest, TxnOffsetCommitResponse),
            DescribeConfigs(DescribeConfigsRequest, DescribeConfigsResponse),
            AlterConfigs(AlterConfigsRequest, AlterConfigsResponse),
            CreatePartitions(CreatePartitionsRequest, CreatePartitionsResponse),
            DeleteGroups(DeleteGroupsRequest, DeleteGroupsResponse),
            IncrementalAlterConfigs(IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse),
            OffsetDelete(OffsetDeleteRequest, OffsetDeleteResponse),
            DescribeCluster(DescribeClusterRequest, DescribeClusterResponse),
            DescribeProducers(DescribeProducersRequest, DescribeProducersResponse),
            DescribeTransactions(DescribeTransactionsRequest, DescribeTransactionsResponse),
            ListTransactions(ListTransactionsRequest, ListTransactionsResponse),
            ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse),
            ConsumerGroupDescribe(ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse),
        }
    };
}

pub mod error;
pub mod frame;
pub mod request;
pub mod response;
pub mod schema;
pub mod vectored;
pub mod versions;

pub use error::{EncodeError, ErrorCode, RequestError};
pub use frame::{FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES};
pub use kafka_protocol as protocol;
pub use request::{decode_request, DecodedRequest, Request, RequestHeader};
pub use response::{encode_response, error_response, Response};
pub use vectored::{encode_response_frame, ResponseFrame};
pub use versions::{api_versions_response, supported_versions, ApiRow, ApiStatus, API_TABLE};
