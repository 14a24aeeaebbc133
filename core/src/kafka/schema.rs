//! Wire schemas of the supported requests, and the bounds check run before decoding.
//!
//! `kafka-protocol` trusts array lengths: it calls `Vec::with_capacity(n)` with the `n`
//! it reads, before reading a single element. A 5-byte frame announcing 2^32 elements
//! would make it reserve hundreds of gigabytes — an allocation failure aborts the whole
//! process. Kafka's own generated code refuses a collection longer than the bytes left;
//! this module does the same from the outside: [`check_request_body`] walks a request
//! body with a compact description of its fields per version (transcribed from the
//! Kafka message schemas) and rejects any array, string or byte length larger than the
//! bytes remaining, before `kafka-protocol` sees the frame.
//!
//! Known tagged fields are parsed by their type and must fill exactly the size their
//! header announces, so the walk and `kafka-protocol`'s decode read the same bytes.
//! The test suite checks that both consume identical byte counts on every supported
//! API and version, on valid and on mutated input.

use kafka_protocol::messages::ApiKey;

/// Why a body failed the bounds check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body ended inside a field.
    #[error("truncated at byte {offset}")]
    Truncated {
        /// Where the walk stopped.
        offset: usize,
    },
    /// A length that is negative (other than null) or larger than the bytes left.
    #[error("impossible length {length} at byte {offset} ({remaining} bytes left)")]
    BadLength {
        /// Where the length was read.
        offset: usize,
        /// The length read.
        length: i64,
        /// The bytes left after it.
        remaining: usize,
    },
    /// A known tagged field whose content does not fill the size its header announced.
    #[error("tagged field {tag} at byte {offset} is not {size} bytes long")]
    BadTaggedField {
        /// Where the field's content starts.
        offset: usize,
        /// The tag.
        tag: u32,
        /// The announced size.
        size: u32,
    },
    /// No schema for this API (not a supported request).
    #[error("no schema for {0:?}")]
    NoSchema(ApiKey),
}

/// A field's wire type. Strings and bytes are nullable and compact in flexible versions.
#[derive(Clone, Copy, Debug)]
enum Ty {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Uuid,
    Str,
    Bytes,
    Array(&'static Ty),
    Struct(&'static Schema),
}

/// A field present in versions `min..=max`.
#[derive(Debug)]
struct Field {
    ty: Ty,
    min: i16,
    max: i16,
}

/// A known tagged field, present from version `min`.
#[derive(Debug)]
struct Tagged {
    tag: u32,
    ty: Ty,
    min: i16,
}

/// A struct: its fields in order, then (in flexible versions) its tagged fields.
#[derive(Debug)]
struct Schema {
    fields: &'static [Field],
    tagged: &'static [Tagged],
}

/// A request body: its top-level struct and the first flexible version.
#[derive(Debug)]
struct Message {
    flexible_from: i16,
    schema: &'static Schema,
}

const fn all(ty: Ty) -> Field {
    Field {
        ty,
        min: 0,
        max: i16::MAX,
    }
}
const fn since(min: i16, ty: Ty) -> Field {
    Field {
        ty,
        min,
        max: i16::MAX,
    }
}
const fn until(max: i16, ty: Ty) -> Field {
    Field { ty, min: 0, max }
}
const fn between(min: i16, max: i16, ty: Ty) -> Field {
    Field { ty, min, max }
}
const fn plain(fields: &'static [Field]) -> Schema {
    Schema { fields, tagged: &[] }
}

use Ty::{Bool, Bytes, Int16, Int32, Int64, Int8, Str, Uuid};

static API_VERSIONS: Schema = plain(&[since(3, Str), since(3, Str)]);

static METADATA_TOPIC: Schema = plain(&[since(10, Uuid), all(Str)]);
static METADATA: Schema = plain(&[
    all(Ty::Array(&Ty::Struct(&METADATA_TOPIC))),
    since(4, Bool),
    between(8, 10, Bool),
    since(8, Bool),
]);

static PRODUCE_PARTITION: Schema = plain(&[all(Int32), all(Bytes)]);
static PRODUCE_TOPIC: Schema = plain(&[
    until(12, Str),
    since(13, Uuid),
    all(Ty::Array(&Ty::Struct(&PRODUCE_PARTITION))),
]);
static PRODUCE: Schema = plain(&[
    all(Str),
    all(Int16),
    all(Int32),
    all(Ty::Array(&Ty::Struct(&PRODUCE_TOPIC))),
]);

static FETCH_PARTITION: Schema = Schema {
    fields: &[
        all(Int32),
        since(9, Int32),
        all(Int64),
        since(12, Int32),
        since(5, Int64),
        all(Int32),
    ],
    tagged: &[
        Tagged {
            tag: 0,
            ty: Uuid,
            min: 17,
        },
        Tagged {
            tag: 1,
            ty: Int64,
            min: 18,
        },
    ],
};
static FETCH_TOPIC: Schema = plain(&[
    until(12, Str),
    since(13, Uuid),
    all(Ty::Array(&Ty::Struct(&FETCH_PARTITION))),
]);
static FETCH_FORGOTTEN: Schema = plain(&[between(7, 12, Str), since(13, Uuid), since(7, Ty::Array(&Int32))]);
static FETCH_REPLICA_STATE: Schema = plain(&[since(15, Int32), since(15, Int64)]);
static FETCH: Schema = Schema {
    fields: &[
        until(14, Int32),
        all(Int32),
        all(Int32),
        all(Int32),
        all(Int8),
        since(7, Int32),
        since(7, Int32),
        all(Ty::Array(&Ty::Struct(&FETCH_TOPIC))),
        since(7, Ty::Array(&Ty::Struct(&FETCH_FORGOTTEN))),
        since(11, Str),
    ],
    tagged: &[
        Tagged {
            tag: 0,
            ty: Str,
            min: 0,
        },
        Tagged {
            tag: 1,
            ty: Ty::Struct(&FETCH_REPLICA_STATE),
            min: 15,
        },
    ],
};

static LIST_OFFSETS_PARTITION: Schema = plain(&[all(Int32), since(4, Int32), all(Int64)]);
static LIST_OFFSETS_TOPIC: Schema = plain(&[all(Str), all(Ty::Array(&Ty::Struct(&LIST_OFFSETS_PARTITION)))]);
static LIST_OFFSETS: Schema = plain(&[
    all(Int32),
    since(2, Int8),
    all(Ty::Array(&Ty::Struct(&LIST_OFFSETS_TOPIC))),
    since(10, Int32),
]);

static EPOCH_PARTITION: Schema = plain(&[all(Int32), all(Int32), all(Int32)]);
static EPOCH_TOPIC: Schema = plain(&[all(Str), all(Ty::Array(&Ty::Struct(&EPOCH_PARTITION)))]);
static OFFSET_FOR_LEADER_EPOCH: Schema = plain(&[since(3, Int32), all(Ty::Array(&Ty::Struct(&EPOCH_TOPIC)))]);

static CREATE_TOPICS_ASSIGNMENT: Schema = plain(&[all(Int32), all(Ty::Array(&Int32))]);
static CREATE_TOPICS_CONFIG: Schema = plain(&[all(Str), all(Str)]);
static CREATE_TOPICS_TOPIC: Schema = plain(&[
    all(Str),
    all(Int32),
    all(Int16),
    all(Ty::Array(&Ty::Struct(&CREATE_TOPICS_ASSIGNMENT))),
    all(Ty::Array(&Ty::Struct(&CREATE_TOPICS_CONFIG))),
]);
static CREATE_TOPICS: Schema = plain(&[
    all(Ty::Array(&Ty::Struct(&CREATE_TOPICS_TOPIC))),
    all(Int32),
    all(Bool),
]);

static DELETE_TOPICS_STATE: Schema = plain(&[since(6, Str), since(6, Uuid)]);
static DELETE_TOPICS: Schema = plain(&[
    since(6, Ty::Array(&Ty::Struct(&DELETE_TOPICS_STATE))),
    until(5, Ty::Array(&Str)),
    all(Int32),
]);

static CREATE_PARTITIONS_ASSIGNMENT: Schema = plain(&[all(Ty::Array(&Int32))]);
static CREATE_PARTITIONS_TOPIC: Schema = plain(&[
    all(Str),
    all(Int32),
    all(Ty::Array(&Ty::Struct(&CREATE_PARTITIONS_ASSIGNMENT))),
]);
static CREATE_PARTITIONS: Schema = plain(&[
    all(Ty::Array(&Ty::Struct(&CREATE_PARTITIONS_TOPIC))),
    all(Int32),
    all(Bool),
]);

static DESCRIBE_CONFIGS_RESOURCE: Schema = plain(&[all(Int8), all(Str), all(Ty::Array(&Str))]);
static DESCRIBE_CONFIGS: Schema = plain(&[
    all(Ty::Array(&Ty::Struct(&DESCRIBE_CONFIGS_RESOURCE))),
    all(Bool),
    since(3, Bool),
]);

static ALTER_CONFIGS_CONFIG: Schema = plain(&[all(Str), all(Str)]);
static ALTER_CONFIGS_RESOURCE: Schema = plain(&[
    all(Int8),
    all(Str),
    all(Ty::Array(&Ty::Struct(&ALTER_CONFIGS_CONFIG))),
]);
static ALTER_CONFIGS: Schema = plain(&[all(Ty::Array(&Ty::Struct(&ALTER_CONFIGS_RESOURCE))), all(Bool)]);

static INCREMENTAL_CONFIG: Schema = plain(&[all(Str), all(Int8), all(Str)]);
static INCREMENTAL_RESOURCE: Schema = plain(&[
    all(Int8),
    all(Str),
    all(Ty::Array(&Ty::Struct(&INCREMENTAL_CONFIG))),
]);
static INCREMENTAL_ALTER_CONFIGS: Schema =
    plain(&[all(Ty::Array(&Ty::Struct(&INCREMENTAL_RESOURCE))), all(Bool)]);

static DELETE_RECORDS_PARTITION: Schema = plain(&[all(Int32), all(Int64)]);
static DELETE_RECORDS_TOPIC: Schema =
    plain(&[all(Str), all(Ty::Array(&Ty::Struct(&DELETE_RECORDS_PARTITION)))]);
static DELETE_RECORDS: Schema = plain(&[all(Ty::Array(&Ty::Struct(&DELETE_RECORDS_TOPIC))), all(Int32)]);

static DESCRIBE_CLUSTER: Schema = plain(&[all(Bool), since(1, Int8), since(2, Bool)]);

static INIT_PRODUCER_ID: Schema = plain(&[all(Str), all(Int32), since(3, Int64), since(3, Int16)]);

static FIND_COORDINATOR: Schema = plain(&[until(3, Str), since(1, Int8), since(4, Ty::Array(&Str))]);

static JOIN_GROUP_PROTOCOL: Schema = plain(&[all(Str), all(Bytes)]);
static JOIN_GROUP: Schema = plain(&[
    all(Str),
    all(Int32),
    since(1, Int32),
    all(Str),
    since(5, Str),
    all(Str),
    all(Ty::Array(&Ty::Struct(&JOIN_GROUP_PROTOCOL))),
    since(8, Str),
]);

static SYNC_GROUP_ASSIGNMENT: Schema = plain(&[all(Str), all(Bytes)]);
static SYNC_GROUP: Schema = plain(&[
    all(Str),
    all(Int32),
    all(Str),
    since(3, Str),
    since(5, Str),
    since(5, Str),
    all(Ty::Array(&Ty::Struct(&SYNC_GROUP_ASSIGNMENT))),
]);

static HEARTBEAT: Schema = plain(&[all(Str), all(Int32), all(Str), since(3, Str)]);

static LEAVE_GROUP_MEMBER: Schema = plain(&[since(3, Str), since(3, Str), since(5, Str)]);
static LEAVE_GROUP: Schema = plain(&[
    all(Str),
    until(2, Str),
    since(3, Ty::Array(&Ty::Struct(&LEAVE_GROUP_MEMBER))),
]);

static OFFSET_COMMIT_PARTITION: Schema = plain(&[all(Int32), all(Int64), since(6, Int32), all(Str)]);
static OFFSET_COMMIT_TOPIC: Schema =
    plain(&[all(Str), all(Ty::Array(&Ty::Struct(&OFFSET_COMMIT_PARTITION)))]);
static OFFSET_COMMIT: Schema = plain(&[
    all(Str),
    all(Int32),
    all(Str),
    since(7, Str),
    until(4, Int64),
    all(Ty::Array(&Ty::Struct(&OFFSET_COMMIT_TOPIC))),
]);

static OFFSET_FETCH_TOPIC: Schema = plain(&[until(7, Str), until(7, Ty::Array(&Int32))]);
static OFFSET_FETCH_GROUP_TOPIC: Schema = plain(&[since(8, Str), since(8, Ty::Array(&Int32))]);
static OFFSET_FETCH_GROUP: Schema = plain(&[
    since(8, Str),
    since(9, Str),
    since(9, Int32),
    since(8, Ty::Array(&Ty::Struct(&OFFSET_FETCH_GROUP_TOPIC))),
]);
static OFFSET_FETCH: Schema = plain(&[
    until(7, Str),
    until(7, Ty::Array(&Ty::Struct(&OFFSET_FETCH_TOPIC))),
    since(8, Ty::Array(&Ty::Struct(&OFFSET_FETCH_GROUP))),
    since(7, Bool),
]);

static DESCRIBE_GROUPS: Schema = plain(&[all(Ty::Array(&Str)), since(3, Bool)]);

static LIST_GROUPS: Schema = plain(&[since(4, Ty::Array(&Str)), since(5, Ty::Array(&Str))]);

static DELETE_GROUPS: Schema = plain(&[all(Ty::Array(&Str))]);

static OFFSET_DELETE_PARTITION: Schema = plain(&[all(Int32)]);
static OFFSET_DELETE_TOPIC: Schema =
    plain(&[all(Str), all(Ty::Array(&Ty::Struct(&OFFSET_DELETE_PARTITION)))]);
static OFFSET_DELETE: Schema = plain(&[all(Str), all(Ty::Array(&Ty::Struct(&OFFSET_DELETE_TOPIC)))]);

static CONSUMER_HEARTBEAT_TOPIC: Schema = plain(&[all(Uuid), all(Ty::Array(&Int32))]);
static CONSUMER_GROUP_HEARTBEAT: Schema = plain(&[
    all(Str),
    all(Str),
    all(Int32),
    all(Str),
    all(Str),
    all(Int32),
    all(Ty::Array(&Str)),
    since(1, Str),
    all(Str),
    all(Ty::Array(&Ty::Struct(&CONSUMER_HEARTBEAT_TOPIC))),
]);

static CONSUMER_GROUP_DESCRIBE: Schema = plain(&[all(Ty::Array(&Str)), all(Bool)]);

static ADD_PARTITIONS_TOPIC: Schema = plain(&[all(Str), all(Ty::Array(&Int32))]);
static ADD_PARTITIONS_TRANSACTION: Schema = plain(&[
    since(4, Str),
    since(4, Int64),
    since(4, Int16),
    since(4, Bool),
    since(4, Ty::Array(&Ty::Struct(&ADD_PARTITIONS_TOPIC))),
]);
static ADD_PARTITIONS_TO_TXN: Schema = plain(&[
    since(4, Ty::Array(&Ty::Struct(&ADD_PARTITIONS_TRANSACTION))),
    until(3, Str),
    until(3, Int64),
    until(3, Int16),
    until(3, Ty::Array(&Ty::Struct(&ADD_PARTITIONS_TOPIC))),
]);

static ADD_OFFSETS_TO_TXN: Schema = plain(&[all(Str), all(Int64), all(Int16), all(Str)]);

static END_TXN: Schema = plain(&[all(Str), all(Int64), all(Int16), all(Bool)]);

static TXN_MARKER_TOPIC: Schema = plain(&[all(Str), all(Ty::Array(&Int32))]);
static TXN_MARKER: Schema = plain(&[
    all(Int64),
    all(Int16),
    all(Bool),
    all(Ty::Array(&Ty::Struct(&TXN_MARKER_TOPIC))),
    all(Int32),
]);
static WRITE_TXN_MARKERS: Schema = plain(&[all(Ty::Array(&Ty::Struct(&TXN_MARKER)))]);

static TXN_OFFSET_COMMIT_PARTITION: Schema = plain(&[all(Int32), all(Int64), since(2, Int32), all(Str)]);
static TXN_OFFSET_COMMIT_TOPIC: Schema = plain(&[
    all(Str),
    all(Ty::Array(&Ty::Struct(&TXN_OFFSET_COMMIT_PARTITION))),
]);
static TXN_OFFSET_COMMIT: Schema = plain(&[
    all(Str),
    all(Str),
    all(Int64),
    all(Int16),
    since(3, Int32),
    since(3, Str),
    since(3, Str),
    all(Ty::Array(&Ty::Struct(&TXN_OFFSET_COMMIT_TOPIC))),
]);

static DESCRIBE_PRODUCERS_TOPIC: Schema = plain(&[all(Str), all(Ty::Array(&Int32))]);
static DESCRIBE_PRODUCERS: Schema = plain(&[all(Ty::Array(&Ty::Struct(&DESCRIBE_PRODUCERS_TOPIC)))]);

static DESCRIBE_TRANSACTIONS: Schema = plain(&[all(Ty::Array(&Str))]);

static LIST_TRANSACTIONS: Schema = plain(&[
    all(Ty::Array(&Str)),
    all(Ty::Array(&Int64)),
    since(1, Int64),
    since(2, Str),
]);

/// The schema and first flexible version of each request in `with_supported_apis!`.
fn message(key: ApiKey) -> Option<Message> {
    let (flexible_from, schema) = match key {
        ApiKey::ApiVersions => (3, &API_VERSIONS),
        ApiKey::Metadata => (9, &METADATA),
        ApiKey::Produce => (9, &PRODUCE),
        ApiKey::Fetch => (12, &FETCH),
        ApiKey::ListOffsets => (6, &LIST_OFFSETS),
        ApiKey::OffsetForLeaderEpoch => (4, &OFFSET_FOR_LEADER_EPOCH),
        ApiKey::CreateTopics => (5, &CREATE_TOPICS),
        ApiKey::DeleteTopics => (4, &DELETE_TOPICS),
        ApiKey::CreatePartitions => (2, &CREATE_PARTITIONS),
        ApiKey::DescribeConfigs => (4, &DESCRIBE_CONFIGS),
        ApiKey::AlterConfigs => (2, &ALTER_CONFIGS),
        ApiKey::IncrementalAlterConfigs => (1, &INCREMENTAL_ALTER_CONFIGS),
        ApiKey::DeleteRecords => (2, &DELETE_RECORDS),
        ApiKey::DescribeCluster => (0, &DESCRIBE_CLUSTER),
        ApiKey::InitProducerId => (2, &INIT_PRODUCER_ID),
        ApiKey::FindCoordinator => (3, &FIND_COORDINATOR),
        ApiKey::JoinGroup => (6, &JOIN_GROUP),
        ApiKey::SyncGroup => (4, &SYNC_GROUP),
        ApiKey::Heartbeat => (4, &HEARTBEAT),
        ApiKey::LeaveGroup => (4, &LEAVE_GROUP),
        ApiKey::OffsetCommit => (8, &OFFSET_COMMIT),
        ApiKey::OffsetFetch => (6, &OFFSET_FETCH),
        ApiKey::DescribeGroups => (5, &DESCRIBE_GROUPS),
        ApiKey::ListGroups => (3, &LIST_GROUPS),
        ApiKey::DeleteGroups => (2, &DELETE_GROUPS),
        // Never flexible: v0 is its only version.
        ApiKey::OffsetDelete => (i16::MAX, &OFFSET_DELETE),
        ApiKey::ConsumerGroupHeartbeat => (0, &CONSUMER_GROUP_HEARTBEAT),
        ApiKey::ConsumerGroupDescribe => (0, &CONSUMER_GROUP_DESCRIBE),
        ApiKey::AddPartitionsToTxn => (3, &ADD_PARTITIONS_TO_TXN),
        ApiKey::AddOffsetsToTxn => (3, &ADD_OFFSETS_TO_TXN),
        ApiKey::EndTxn => (3, &END_TXN),
        // Flexible from v1, its only version (v0 was removed from Kafka).
        ApiKey::WriteTxnMarkers => (1, &WRITE_TXN_MARKERS),
        ApiKey::TxnOffsetCommit => (3, &TXN_OFFSET_COMMIT),
        ApiKey::DescribeProducers => (0, &DESCRIBE_PRODUCERS),
        ApiKey::DescribeTransactions => (0, &DESCRIBE_TRANSACTIONS),
        ApiKey::ListTransactions => (0, &LIST_TRANSACTIONS),
        _ => return None,
    };
    Some(Message {
        flexible_from,
        schema,
    })
}

/// Walks a request body of API `key` at `version` and returns the bytes it occupies.
/// Fails if any length is impossible (negative other than null, or longer than the
/// bytes left) or the body is truncated; trailing bytes are not an error.
pub fn check_request_body(key: ApiKey, version: i16, body: &[u8]) -> Result<usize, BodyError> {
    let message = message(key).ok_or(BodyError::NoSchema(key))?;
    let mut walk = Walk {
        body,
        offset: 0,
        version,
        flexible: version >= message.flexible_from,
    };
    walk.schema(message.schema)?;
    Ok(walk.offset)
}

/// A cursor over a body being checked.
struct Walk<'a> {
    body: &'a [u8],
    offset: usize,
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn remaining(&self) -> usize {
        self.body.len().saturating_sub(self.offset)
    }

    fn skip(&mut self, count: usize) -> Result<(), BodyError> {
        if count > self.remaining() {
            return Err(BodyError::Truncated { offset: self.offset });
        }
        self.offset += count;
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], BodyError> {
        let bytes = self
            .body
            .get(self.offset..self.offset.saturating_add(N))
            .and_then(|slice| <[u8; N]>::try_from(slice).ok())
            .ok_or(BodyError::Truncated { offset: self.offset })?;
        self.offset += N;
        Ok(bytes)
    }

    /// An unsigned varint, read as `kafka-protocol` reads it: at most 5 bytes, 7 bits
    /// each, bits beyond 32 dropped.
    fn varint(&mut self) -> Result<u32, BodyError> {
        let mut value: u32 = 0;
        for index in 0..5 {
            let [byte] = self.take::<1>()?;
            value |= u32::from(byte & 0x7f).wrapping_shl(7 * index);
            if byte < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// A length prefix: `None` for null, else the count, which must fit in what is left.
    fn length(&mut self, classic_bytes: usize) -> Result<Option<usize>, BodyError> {
        let offset = self.offset;
        let length: i64 = if self.flexible {
            i64::from(self.varint()?) - 1
        } else if classic_bytes == 2 {
            i64::from(i16::from_be_bytes(self.take::<2>()?))
        } else {
            i64::from(i32::from_be_bytes(self.take::<4>()?))
        };
        if length == -1 {
            return Ok(None);
        }
        match usize::try_from(length) {
            Ok(count) if count <= self.remaining() => Ok(Some(count)),
            _ => Err(BodyError::BadLength {
                offset,
                length,
                remaining: self.remaining(),
            }),
        }
    }

    fn value(&mut self, ty: &Ty) -> Result<(), BodyError> {
        match ty {
            Ty::Bool | Ty::Int8 => self.skip(1),
            Ty::Int16 => self.skip(2),
            Ty::Int32 => self.skip(4),
            Ty::Int64 => self.skip(8),
            Ty::Uuid => self.skip(16),
            Ty::Str => {
                let length = self.length(2)?;
                self.skip(length.unwrap_or(0))
            }
            Ty::Bytes => {
                let length = self.length(4)?;
                self.skip(length.unwrap_or(0))
            }
            Ty::Array(element) => {
                for _ in 0..self.length(4)?.unwrap_or(0) {
                    self.value(element)?;
                }
                Ok(())
            }
            Ty::Struct(schema) => self.schema(schema),
        }
    }

    fn schema(&mut self, schema: &Schema) -> Result<(), BodyError> {
        for field in schema.fields {
            if (field.min..=field.max).contains(&self.version) {
                self.value(&field.ty)?;
            }
        }
        if self.flexible {
            self.tagged_fields(schema.tagged)?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self, known: &[Tagged]) -> Result<(), BodyError> {
        let count = self.varint()?;
        for _ in 0..count {
            let tag = self.varint()?;
            let size = self.varint()?;
            let start = self.offset;
            match known.iter().find(|t| t.tag == tag && self.version >= t.min) {
                Some(field) => {
                    self.value(&field.ty)?;
                    if self.offset - start != size as usize {
                        return Err(BodyError::BadTaggedField {
                            offset: start,
                            tag,
                            size,
                        });
                    }
                }
                None => self.skip(size as usize)?,
            }
        }
        Ok(())
    }
}
