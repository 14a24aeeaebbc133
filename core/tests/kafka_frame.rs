//! The frame decoder: whole, split and coalesced frames; size limits; bounded buffering;
//! and arbitrary input never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use oxbow_core::kafka::frame::{frame, SIZE_PREFIX_BYTES};
use oxbow_core::kafka::{FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES};
use proptest::prelude::*;

fn drain(decoder: &mut FrameDecoder) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame.to_vec());
    }
    Ok(frames)
}

#[test]
fn a_whole_frame_comes_out_without_its_prefix() {
    let mut decoder = FrameDecoder::default();
    let bytes = frame(b"hello").unwrap();
    assert_eq!(&bytes[..4], &[0, 0, 0, 5]);
    assert_eq!(decoder.push(&bytes), 9);
    assert_eq!(drain(&mut decoder).unwrap(), vec![b"hello".to_vec()]);
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn a_frame_taken_whole_owns_its_buffer_alone() {
    // An idle connection's decoder must not keep a frame-sized buffer alive.
    let mut decoder = FrameDecoder::default();
    decoder.push(&frame(&[7u8; 1000]).unwrap());
    let taken = decoder.next_frame().unwrap().unwrap();
    assert_eq!(taken.len(), 1000);
    assert!(
        taken.try_into_mut().is_ok(),
        "the decoder still shares the frame's buffer"
    );
    // With the next frame's start behind it, the frame is split off as before.
    let mut two = frame(b"first").unwrap().to_vec();
    two.extend_from_slice(&frame(b"second").unwrap());
    decoder.push(&two);
    assert_eq!(
        drain(&mut decoder).unwrap(),
        vec![b"first".to_vec(), b"second".to_vec()]
    );
}

#[test]
fn a_frame_pushed_as_its_own_bytes_is_not_copied_and_keeps_its_place_in_line() {
    let mut decoder = FrameDecoder::default();
    let whole = frame(&[9u8; 4096]).unwrap();
    assert_eq!(decoder.push_bytes(&whole), whole.len());
    assert_eq!(decoder.buffered_bytes(), whole.len());
    // Bytes pushed after it come out after it (copied: the decoder is not empty).
    let mut next = frame(b"after").unwrap().to_vec();
    next.extend_from_slice(&frame(b"and more").unwrap()[..6]);
    assert_eq!(decoder.push_bytes(&bytes::Bytes::from(next)), 15);
    let taken = decoder.next_frame().unwrap().unwrap();
    assert_eq!(
        taken.as_ptr(),
        whole[SIZE_PREFIX_BYTES..].as_ptr(),
        "the frame is a slice of the pushed bytes"
    );
    assert_eq!(decoder.next_frame().unwrap().unwrap().as_ref(), b"after");
    assert_eq!(decoder.next_frame().unwrap(), None, "the third frame is partial");
    // A pushed chunk that is not exactly one frame is copied as `push` does.
    let mut decoder = FrameDecoder::default();
    let two = [frame(b"a").unwrap().to_vec(), frame(b"b").unwrap().to_vec()].concat();
    assert_eq!(decoder.push_bytes(&bytes::Bytes::from(two)), 10);
    assert_eq!(drain(&mut decoder).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
    // An exact frame over the limit is refused like any other.
    let mut decoder = FrameDecoder::new(8);
    decoder.push_bytes(&frame(&[0u8; 9]).unwrap());
    assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { .. })));
}

#[test]
fn a_frame_split_byte_by_byte_comes_out_once_complete() {
    let mut decoder = FrameDecoder::default();
    let bytes = frame(b"split me").unwrap();
    for (i, byte) in bytes.iter().enumerate() {
        assert_eq!(decoder.next_frame().unwrap(), None, "incomplete after {i} bytes");
        assert_eq!(decoder.push(&[*byte]), 1);
    }
    assert_eq!(decoder.next_frame().unwrap().unwrap().as_ref(), b"split me");
}

#[test]
fn coalesced_frames_come_out_in_order() {
    let mut decoder = FrameDecoder::default();
    let mut bytes = Vec::new();
    for payload in [&b"a"[..], b"bb", b"ccc"] {
        bytes.extend_from_slice(&frame(payload).unwrap());
    }
    bytes.extend_from_slice(&[0, 0, 0]); // start of a fourth prefix
    decoder.push(&bytes);
    assert_eq!(
        drain(&mut decoder).unwrap(),
        vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]
    );
    assert_eq!(decoder.buffered_bytes(), 3);
}

#[test]
fn the_default_maximum_is_kafkas_100_mib() {
    assert_eq!(DEFAULT_MAX_FRAME_BYTES, 104_857_600);
    assert_eq!(FrameDecoder::default().max_frame_bytes(), DEFAULT_MAX_FRAME_BYTES);
}

#[test]
fn an_oversized_frame_is_refused_from_its_prefix_alone() {
    let mut decoder = FrameDecoder::new(1024);
    decoder.push(&1025i32.to_be_bytes());
    let error = decoder.next_frame().unwrap_err();
    assert_eq!(
        error,
        FrameError::TooLarge {
            size_bytes: 1025,
            max_bytes: 1024
        }
    );
    assert_eq!(
        error.to_string(),
        "frame of 1025 bytes exceeds the maximum of 1024 bytes"
    );
    // The decoder stays failed and takes no more input.
    assert_eq!(decoder.next_frame().unwrap_err(), error);
    assert_eq!(decoder.push(b"more"), 0);
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn a_frame_of_exactly_the_maximum_is_accepted() {
    let mut decoder = FrameDecoder::new(16);
    decoder.push(&frame(&[7u8; 16]).unwrap());
    assert_eq!(decoder.next_frame().unwrap().unwrap().len(), 16);
}

#[test]
fn the_default_maximum_refuses_a_2_gib_frame() {
    let mut decoder = FrameDecoder::default();
    decoder.push(&i32::MAX.to_be_bytes());
    assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { .. })));
}

#[test]
fn zero_and_negative_sizes_are_refused() {
    for size in [0i32, -1, i32::MIN] {
        let mut decoder = FrameDecoder::default();
        decoder.push(&size.to_be_bytes());
        assert_eq!(
            decoder.next_frame().unwrap_err(),
            FrameError::InvalidSize { size_bytes: size }
        );
    }
}

#[test]
fn buffering_is_bounded_by_one_maximal_frame() {
    let mut decoder = FrameDecoder::new(10);
    assert_eq!(decoder.capacity_bytes(), 14);
    // A 10-byte frame and the start of the next: only what fits is taken.
    let mut bytes = frame(&[1u8; 10]).unwrap().to_vec();
    bytes.extend_from_slice(&frame(&[2u8; 10]).unwrap());
    let taken = decoder.push(&bytes);
    assert_eq!(taken, 14);
    assert_eq!(decoder.free_bytes(), 0);
    assert_eq!(decoder.next_frame().unwrap().unwrap().as_ref(), &[1u8; 10]);
    // Draining frees room for the rest.
    assert_eq!(decoder.push(&bytes[taken..]), 14);
    assert_eq!(decoder.next_frame().unwrap().unwrap().as_ref(), &[2u8; 10]);
    assert_eq!(decoder.buffered_bytes(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes in arbitrary chunks never panic, never buffer beyond the bound,
    /// and whatever comes out is well framed.
    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
        max in 1u32..256,
    ) {
        let mut decoder = FrameDecoder::new(max);
        for piece in data.chunks(chunk) {
            let mut rest = piece;
            loop {
                let taken = decoder.push(rest);
                prop_assert!(decoder.buffered_bytes() <= decoder.capacity_bytes());
                rest = &rest[taken..];
                match decoder.next_frame() {
                    Ok(Some(frame)) => prop_assert!(!frame.is_empty() && frame.len() <= max as usize),
                    Ok(None) if rest.is_empty() => break,
                    Ok(None) => prop_assert!(taken > 0 || decoder.free_bytes() > 0, "no progress"),
                    Err(_) => break,
                }
            }
        }
    }

    /// Valid frames, however the stream is chunked, come out exactly as sent.
    #[test]
    fn valid_frames_survive_any_chunking(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..8),
        chunk in 1usize..50,
    ) {
        let mut stream = Vec::new();
        for payload in &payloads {
            stream.extend_from_slice(&frame(payload).unwrap());
        }
        let mut decoder = FrameDecoder::new(64);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let taken = decoder.push(rest);
                rest = &rest[taken..];
                out.extend(drain(&mut decoder).unwrap());
            }
        }
        prop_assert_eq!(out, payloads);
        prop_assert_eq!(decoder.buffered_bytes(), 0);
    }
}

#[test]
fn the_prefix_is_four_bytes() {
    assert_eq!(SIZE_PREFIX_BYTES, 4);
}
