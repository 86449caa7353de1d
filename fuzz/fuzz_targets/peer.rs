//! Every decoder of bytes a cluster peer sends before it has proven the secret: frame
//! splitting, every handshake message kind and the identity record. Whatever decodes must
//! re-encode to the same bytes (the MACs rely on the encoding being canonical).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wolfscale::cluster::transport::{
    decode_frame, HandshakeMessage, PeerIdentity, HANDSHAKE_MAX, MAGIC, VERSION,
};

fn check_message(bytes: &[u8]) {
    if let Ok(msg) = HandshakeMessage::decode(bytes) {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        assert_eq!(&out[..], bytes, "{} does not re-encode", msg.name());
        assert!(out.len() <= HANDSHAKE_MAX);
    }
}

fuzz_target!(|data: &[u8]| {
    // Frames, as a stream would deliver them, under a small cap and a large one.
    for max in [HANDSHAKE_MAX, 1 << 20] {
        let mut buf = BytesMut::from(data);
        let mut consumed = 0;
        while let Ok(Some(frame)) = decode_frame(&mut buf, max) {
            assert!(frame.len() <= max);
            consumed += 4 + frame.len();
            check_message(&frame);
        }
        assert_eq!(consumed + buf.len(), data.len());
    }
    // The input as one message, and behind a valid prefix of every kind so the
    // fuzzer reaches the bodies at once.
    check_message(data);
    for kind in 1..=5u8 {
        let mut msg = MAGIC.to_vec();
        msg.extend_from_slice(&[VERSION, kind]);
        msg.extend_from_slice(data);
        check_message(&msg);
    }
    if let Ok(id) = PeerIdentity::decode(data) {
        assert!(id.validate().is_ok());
        let mut out = BytesMut::new();
        id.encode(&mut out);
        assert_eq!(&out[..], data);
    }
});
