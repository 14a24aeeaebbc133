//! A small synchronous Kafka client for the `oxbow` command line (topic, produce,
//! consume, cluster commands): one TCP connection, requests encoded and responses
//! decoded with `kafka-protocol`, at the versions Oxbow serves. Benchmarks and tests use
//! real clients (librdkafka); this is for people at a terminal.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response the client accepts.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection failed.
    #[error("cannot talk to {addr}: {source}")]
    Io {
        /// The broker.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker answered something the client cannot read.
    #[error("bad response from {addr}: {reason}")]
    Protocol {
        /// The broker.
        addr: String,
        /// What is wrong.
        reason: String,
    },
}

/// One connection to one broker.
#[derive(Debug)]
pub struct KafkaClient {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaClient {
    /// Connects to the first reachable address of `brokers` (`HOST:PORT[,...]`).
    pub fn connect(brokers: &str) -> Result<KafkaClient, ClientError> {
        let mut last_error = None;
        for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let resolved = addr.to_socket_addrs().map(|mut a| a.next());
            let result = match resolved {
                Ok(Some(socket)) => TcpStream::connect_timeout(&socket, Duration::from_secs(5)),
                Ok(None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")),
                Err(e) => Err(e),
            };
            match result {
                Ok(stream) => {
                    let io = |source| ClientError::Io {
                        addr: addr.to_string(),
                        source,
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(io)?;
                    stream.set_nodelay(true).map_err(io)?;
                    return Ok(KafkaClient {
                        addr: addr.to_string(),
                        stream,
                        correlation_id: 0,
                    });
                }
                Err(source) => {
                    last_error = Some(ClientError::Io {
                        addr: addr.to_string(),
                        source,
                    })
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::Io {
            addr: brokers.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no broker address given"),
        }))
    }

    /// Sends `request` without waiting for an answer (Produce with acks=0).
    pub fn send_only<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<(), ClientError> {
        let frame = self.frame(key, version, request)?;
        self.stream.write_all(&frame).map_err(|source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Encodes a request frame (size prefix, header, body) with the next correlation id.
    fn frame<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<BytesMut, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let protocol = |reason: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("oxbow-cli")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, key.request_header_version(version))
            .map_err(|e| protocol(format!("encoding the request header: {e}")))?;
        request
            .encode(&mut payload, version)
            .map_err(|e| protocol(format!("encoding the request: {e}")))?;
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        frame.put_i32(payload.len() as i32);
        frame.extend_from_slice(&payload);
        Ok(frame)
    }

    /// Sends `request` (API `key`, `version`) and returns the decoded response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        let frame = self.frame(key, version, request)?;
        let protocol = |reason: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&frame).map_err(io)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let len = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if len > MAX_RESPONSE_BYTES {
            return Err(protocol(format!("a response of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).map_err(io)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| protocol(format!("decoding the response header: {e}")))?;
        if header.correlation_id != self.correlation_id {
            return Err(protocol(format!(
                "correlation id {} where {} was expected",
                header.correlation_id, self.correlation_id
            )));
        }
        let response =
            Resp::decode(&mut body, version).map_err(|e| protocol(format!("decoding the response: {e}")))?;
        if body.has_remaining() {
            return Err(protocol(format!("{} bytes after the response", body.remaining())));
        }
        Ok(response)
    }
}
