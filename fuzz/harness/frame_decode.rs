//! Fuzz harness: arbitrary bytes as a peer's stream, as they are and as frames with
//! repaired lengths and checksums, delivered in chunks whose size the first byte
//! chooses. Decoding never panics; every decoded message re-encodes to
//! a frame that decodes to the same message.

use kirikae_replicate::{encode, FrameDecoder, Message, PROTOCOL_VERSION};

const MAX: usize = 1 << 16;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    // Half the inputs start with a valid Hello, as a real stream does.
    let mut stream = Vec::new();
    if chunk & 0x80 != 0 {
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            epoch: kirikae_replicate::Epoch(1),
            node: "fuzz".into(),
            last_seq: kirikae_replicate::Seq(0),
            nonce: [1; 32],
        };
        stream = encode(&hello, MAX).expect("hello encodes");
    }
    let mut repaired = stream.clone();
    repaired.extend_from_slice(&crate::repair::framed(rest));
    stream.extend_from_slice(rest);
    decode(chunk, &stream);
    decode(chunk, &repaired);
}

fn decode(chunk: u8, stream: &[u8]) {
    let mut decoder = FrameDecoder::new(MAX);
    for piece in stream.chunks(usize::from(chunk & 0x7f).max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let frame = encode(&message, MAX).expect("a decoded message re-encodes");
                    let mut again = FrameDecoder::new(MAX);
                    again.push(&frame);
                    assert_eq!(again.next_message(), Ok(Some(message)));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}
