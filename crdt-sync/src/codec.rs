//! The one codec of the sync wire format: every message between nodes is a frame made here.
//!
//! A frame is
//!
//! | bytes | what |
//! |---|---|
//! | 4 | the magic `b"WSYN"` |
//! | 2 | the protocol version, a big-endian `u16` ([`PROTOCOL_VERSION`]) |
//! | rest | the message: bincode 2 (pinned `=2.0.1`), `config::standard()` (little-endian, varint integers) |
//!
//! and is at most [`MAX_MESSAGE_BYTES`] long, header included. Messages derive
//! `bincode::Encode` and `bincode::Decode`; the codec is generic, so the replication core's
//! message types plug in. A change to any encoded type that an older build could not read
//! needs a new [`PROTOCOL_VERSION`]: a node refuses a peer that speaks another version (the
//! transport's Hello), it never guesses.
//!
//! Decoding takes untrusted bytes: every failure is a [`CodecError`], never a panic, and a
//! length inside the body can never make it allocate more than the frame limit (bincode's
//! byte limit is checked before each allocation). One frame holds exactly one message:
//! bytes left after it are an error.
//!
//! ```
//! use warden_sync::codec::{decode, encode, CodecError};
//!
//! #[derive(bincode::Encode, bincode::Decode, Debug, PartialEq)]
//! struct Ping { seq: u64, from: String }
//!
//! let frame = encode(&Ping { seq: 7, from: "eu-1".into() }).unwrap();
//! assert_eq!(&frame[..4], b"WSYN");
//! assert_eq!(decode::<Ping>(&frame).unwrap(), Ping { seq: 7, from: "eu-1".into() });
//! assert!(matches!(decode::<Ping>(&frame[..3]), Err(CodecError::TooShort { len: 3 })));
//! ```

use bincode::enc::write::SizeWriter;
use bincode::enc::EncoderImpl;
use bytes::Bytes;

pub use crate::limits::MAX_MESSAGE_BYTES;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"WSYN";

/// The version of the wire format this build speaks. Peers must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes before the body: the magic and the version.
pub const HEADER_BYTES: usize = MAGIC.len() + 2;

/// The most a body may take: the frame limit less the header.
const BODY_BYTES_MAX: usize = MAX_MESSAGE_BYTES - HEADER_BYTES;

/// bincode's standard configuration with the body limit: a length prefix that claims more
/// than the frame holds fails before anything is allocated.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BODY_BYTES_MAX>()
}

/// Why a frame could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the header (`len` bytes came).
    #[error("frame too short: {len} bytes, the header alone takes {HEADER_BYTES}")]
    TooShort {
        /// Length of what came.
        len: usize,
    },
    /// The first four bytes are not `WSYN`: not a warden sync frame.
    #[error("not a warden sync frame (bad magic {found:02x?})")]
    BadMagic {
        /// The four bytes found instead.
        found: [u8; 4],
    },
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs}, this node speaks {ours}")]
    Version {
        /// The version in the frame.
        theirs: u16,
        /// The version this side speaks.
        ours: u16,
    },
    /// The frame (or the message, once encoded) is larger than [`MAX_MESSAGE_BYTES`].
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Its length in bytes, header included.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid encoding of the expected message (bincode's message).
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The body holds a whole message and then more bytes.
    #[error("{extra} bytes after the message")]
    Trailing {
        /// How many bytes were left.
        extra: usize,
    },
    /// The message could not be encoded (a custom `Encode` failed; bincode's message).
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// Encodes `msg` as one frame of the current [`PROTOCOL_VERSION`].
///
/// Errors: [`CodecError::TooLarge`] when the frame would exceed [`MAX_MESSAGE_BYTES`]
/// (nothing is allocated for it), [`CodecError::Encode`] when an `Encode` impl fails.
pub fn encode<T: bincode::Encode>(msg: &T) -> Result<Bytes, CodecError> {
    encode_versioned(PROTOCOL_VERSION, msg)
}

/// Decodes one frame of the current [`PROTOCOL_VERSION`] into a `T`.
///
/// Errors, checked in this order: [`CodecError::TooLarge`], [`CodecError::TooShort`],
/// [`CodecError::BadMagic`], [`CodecError::Version`], [`CodecError::Malformed`],
/// [`CodecError::Trailing`].
pub fn decode<T: bincode::Decode<()>>(frame: &[u8]) -> Result<T, CodecError> {
    decode_versioned(PROTOCOL_VERSION, frame)
}

/// [`encode`] with another version in the header: for the transport's tests of a peer that
/// speaks another version.
pub(crate) fn encode_versioned<T: bincode::Encode>(
    version: u16,
    msg: &T,
) -> Result<Bytes, CodecError> {
    let mut sizer = EncoderImpl::new(SizeWriter::default(), config());
    msg.encode(&mut sizer)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = HEADER_BYTES + sizer.into_writer().bytes_written;
    if len > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&version.to_be_bytes());
    bincode::encode_into_std_write(msg, &mut frame, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    debug_assert_eq!(frame.len(), len, "the size pass and the encoding agree");
    Ok(Bytes::from(frame))
}

/// [`decode`] expecting `ours` as the version.
pub(crate) fn decode_versioned<T: bincode::Decode<()>>(
    ours: u16,
    frame: &[u8],
) -> Result<T, CodecError> {
    let body = check_header(ours, frame)?;
    let (msg, used) = bincode::decode_from_slice(body, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    match body.len() - used {
        0 => Ok(msg),
        extra => Err(CodecError::Trailing { extra }),
    }
}

/// Checks the length, magic and version of `frame`; returns its body.
fn check_header(ours: u16, frame: &[u8]) -> Result<&[u8], CodecError> {
    let len = frame.len();
    if len > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    let Some((header, body)) = frame.split_first_chunk::<HEADER_BYTES>() else {
        return Err(CodecError::TooShort { len });
    };
    let (magic, version) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        let found = [magic[0], magic[1], magic[2], magic[3]];
        return Err(CodecError::BadMagic { found });
    }
    let theirs = u16::from_be_bytes([version[0], version[1]]);
    if theirs != ours {
        return Err(CodecError::Version { theirs, ours });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A message with every shape the replication core uses: nesting, sequences, text,
    /// enums with data, options, maps' stand-in (a Vec of pairs), bytes.
    #[derive(bincode::Encode, bincode::Decode, Debug, Clone, PartialEq)]
    struct Envelope {
        from: String,
        seq: u64,
        deltas: Vec<Delta>,
        ack: Option<u64>,
        blob: Vec<u8>,
    }

    #[derive(bincode::Encode, bincode::Decode, Debug, Clone, PartialEq)]
    enum Delta {
        Rights {
            pool: String,
            dims: Vec<(String, i128)>,
        },
        Halt {
            agent: String,
            epoch: u32,
            reason: Option<String>,
        },
        Nothing,
    }

    fn sample() -> Envelope {
        Envelope {
            from: "eu-1".into(),
            seq: 42,
            deltas: vec![
                Delta::Rights {
                    pool: "swarm/research".into(),
                    dims: vec![("tokens".into(), -5)],
                },
                Delta::Halt {
                    agent: "coder".into(),
                    epoch: 3,
                    reason: Some("loop".into()),
                },
                Delta::Nothing,
            ],
            ack: None,
            blob: vec![0, 1, 2, 255],
        }
    }

    fn arb_delta() -> impl Strategy<Value = Delta> {
        prop_oneof![
            (
                ".{0,12}",
                prop::collection::vec((".{0,6}", any::<i128>()), 0..4)
            )
                .prop_map(|(pool, dims)| Delta::Rights { pool, dims }),
            (".{0,12}", any::<u32>(), prop::option::of(".{0,20}")).prop_map(
                |(agent, epoch, reason)| Delta::Halt {
                    agent,
                    epoch,
                    reason
                }
            ),
            Just(Delta::Nothing),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        (
            ".{0,16}",
            any::<u64>(),
            prop::collection::vec(arb_delta(), 0..6),
            prop::option::of(any::<u64>()),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(from, seq, deltas, ack, blob)| Envelope {
                from,
                seq,
                deltas,
                ack,
                blob,
            })
    }

    #[test]
    fn a_message_survives_the_round_trip() {
        let frame = encode(&sample()).unwrap();
        assert_eq!(&frame[..4], b"WSYN");
        assert_eq!(&frame[4..6], &PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(decode::<Envelope>(&frame).unwrap(), sample());
    }

    #[test]
    fn a_frame_shorter_than_the_header_is_too_short() {
        for len in 0..HEADER_BYTES {
            let frame = encode(&sample()).unwrap();
            assert_eq!(
                decode::<Envelope>(&frame[..len]),
                Err(CodecError::TooShort { len })
            );
        }
    }

    #[test]
    fn another_magic_is_refused() {
        let mut frame = encode(&sample()).unwrap().to_vec();
        frame[..4].copy_from_slice(b"HTTP");
        assert_eq!(
            decode::<Envelope>(&frame),
            Err(CodecError::BadMagic { found: *b"HTTP" })
        );
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let frame = encode_versioned(PROTOCOL_VERSION + 1, &sample()).unwrap();
        assert_eq!(
            decode::<Envelope>(&frame),
            Err(CodecError::Version {
                theirs: PROTOCOL_VERSION + 1,
                ours: PROTOCOL_VERSION
            })
        );
        let text = decode::<Envelope>(&frame).unwrap_err().to_string();
        assert_eq!(text, "protocol version 2, this node speaks 1");
        assert_eq!(
            decode_versioned::<Envelope>(PROTOCOL_VERSION + 1, &frame).unwrap(),
            sample()
        );
    }

    #[test]
    fn an_oversized_message_is_not_encoded_and_an_oversized_frame_not_decoded() {
        let big = Envelope {
            blob: vec![7; MAX_MESSAGE_BYTES],
            ..sample()
        };
        let Err(CodecError::TooLarge { len, max }) = encode(&big) else {
            panic!("encoded")
        };
        assert!(len > MAX_MESSAGE_BYTES && max == MAX_MESSAGE_BYTES);
        let fits = Envelope {
            blob: vec![7; MAX_MESSAGE_BYTES - 64],
            ..sample()
        };
        let mut frame = encode(&fits).unwrap().to_vec();
        assert!(frame.len() <= MAX_MESSAGE_BYTES);
        frame.resize(MAX_MESSAGE_BYTES + 1, 0);
        assert_eq!(
            decode::<Envelope>(&frame),
            Err(CodecError::TooLarge {
                len: MAX_MESSAGE_BYTES + 1,
                max: MAX_MESSAGE_BYTES
            })
        );
    }

    #[test]
    fn a_body_of_another_shape_is_malformed() {
        let frame = encode(&sample()).unwrap();
        // Cut in the middle of the body.
        let cut = decode::<Envelope>(&frame[..frame.len() - 3]);
        assert!(matches!(cut, Err(CodecError::Malformed(_))), "{cut:?}");
        // A length prefix claiming more than the frame limit fails before allocating.
        let mut huge = frame[..HEADER_BYTES].to_vec();
        huge.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0x7f]); // varint u32 len ~2^31
        let err = decode::<Vec<u8>>(&huge).unwrap_err();
        assert!(
            matches!(err, CodecError::Malformed(ref m) if m.contains("LimitExceeded")),
            "{err:?}"
        );
        // An enum tag that names no variant.
        let mut bad_tag = frame[..HEADER_BYTES].to_vec();
        bad_tag.push(9);
        assert!(matches!(
            decode::<Delta>(&bad_tag),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn bytes_after_the_message_are_refused() {
        let mut frame = encode(&sample()).unwrap().to_vec();
        frame.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode::<Envelope>(&frame),
            Err(CodecError::Trailing { extra: 2 })
        );
    }

    proptest! {
        #[test]
        fn any_message_round_trips(msg in arb_envelope()) {
            let frame = encode(&msg).unwrap();
            prop_assert_eq!(decode::<Envelope>(&frame).unwrap(), msg);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Envelope>(&bytes);
            // With a valid header, so the body decoder sees the arbitrary bytes.
            let mut framed = encode(&()).unwrap().to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode::<Envelope>(&framed);
        }

        #[test]
        fn damaged_valid_frames_never_panic(
            msg in arb_envelope(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
            tail in prop::collection::vec(any::<u8>(), 1..32),
        ) {
            let frame = encode(&msg).unwrap().to_vec();
            // Truncated.
            let truncated = &frame[..cut.index(frame.len())];
            prop_assert!(decode::<Envelope>(truncated).is_err());
            // Bit-flipped: an error, or some message (a flip inside a string or a number).
            let mut flipped = frame.clone();
            for (at, bit) in &flips {
                flipped[at.index(frame.len())] ^= 1 << bit;
            }
            let _ = decode::<Envelope>(&flipped);
            // Lengthened.
            let mut longer = frame.clone();
            longer.extend_from_slice(&tail);
            prop_assert!(decode::<Envelope>(&longer).is_err());
        }
    }
}
