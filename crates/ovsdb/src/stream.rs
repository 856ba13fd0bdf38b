//! Splits the byte stream from ovsdb-server into JSON-RPC messages. The
//! messages are not delimited, so a small scanner tracks object nesting
//! (and strings, where braces do not count) to find where each top-level
//! object ends, and only complete objects are parsed: linear in the bytes
//! received, however the stream is chunked. A message that grows past
//! [`MAX_MESSAGE`] without ending is an error, not unbounded memory.

use serde_json::Value;

/// The largest message accepted: far above a monitor reply for thousands
/// of ports.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Incremental splitter of concatenated JSON objects.
#[derive(Debug)]
pub(crate) struct Framer {
    buf: Vec<u8>,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// Nesting depth of objects and arrays at `scanned`.
    depth: usize,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl Framer {
    pub(crate) fn new() -> Self {
        Self::with_max(MAX_MESSAGE)
    }

    pub(crate) fn with_max(max: usize) -> Self {
        Framer {
            buf: Vec::new(),
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            max,
        }
    }

    /// Adds received bytes; returns the messages they complete. After an
    /// error the stream is unusable (the connection must be dropped).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<Value>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while self.scanned < self.buf.len() {
            let b = self.buf[self.scanned];
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\r' | b'\n' if self.depth == 0 => start = self.scanned,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let msg = &self.buf[start..self.scanned];
                        let v = serde_json::from_slice::<Value>(msg).map_err(|e| e.to_string())?;
                        if !v.is_object() {
                            return Err("a message that is not a JSON object".into());
                        }
                        out.push(v);
                        start = self.scanned;
                    }
                }
                b'"' if self.depth > 0 => self.in_string = true,
                _ if self.depth == 0 => {
                    return Err(format!(
                        "unexpected byte {:?} between messages",
                        char::from(b)
                    ))
                }
                _ => {}
            }
        }
        self.buf.drain(..start);
        self.scanned -= start;
        if self.buf.len() > self.max {
            return Err(format!(
                "a message longer than {} bytes without end",
                self.max
            ));
        }
        Ok(out)
    }

    /// Bytes held for a message not yet complete.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn stream_of_concatenated_values() {
        let mut f = Framer::new();
        let v = f
            .push(br#"{"id":1,"result":[]}{"method":"echo","params":[],"id":"e"}{"id":2,"res"#)
            .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(f.pending(), br#"{"id":2,"res"#);
        let v = f.push(br#"ult":"}{\"}"}  "#).unwrap();
        assert_eq!(v, vec![json!({"id": 2, "result": "}{\"}"})]);
        assert!(f.pending().is_empty());
        assert!(Framer::new().push(b"{]").is_err());
        assert!(Framer::new().push(b"5").is_err());
        assert!(Framer::new().push(b"[1]").is_err());
    }

    #[test]
    fn an_endless_message_is_refused_past_the_cap() {
        let mut f = Framer::with_max(1024);
        assert!(f.push(b"{\"a\":\"").is_ok());
        let chunk = [b'x'; 100];
        let refused = (0..100).any(|_| f.push(&chunk).is_err());
        assert!(refused, "the framer kept {} bytes", f.pending().len());
        let mut f = Framer::with_max(1024);
        let deep = [b'['; 100];
        let refused = (0..100).any(|_| f.push(&deep).is_err());
        assert!(refused);
    }

    fn message() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (any::<u64>(), value).prop_map(|(id, result)| json!({"id": id, "result": result}))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Valid messages come out whole and in order, however the stream
        /// is cut into chunks.
        #[test]
        fn any_chunking_yields_the_messages(
            msgs in prop::collection::vec(message(), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut bytes = Vec::new();
            for m in &msgs {
                bytes.extend(serde_json::to_vec(m).unwrap());
                bytes.push(b'\n');
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len())).collect();
            cuts.push(bytes.len());
            cuts.sort();
            let mut f = Framer::new();
            let mut got = Vec::new();
            let mut from = 0;
            for c in cuts {
                got.extend(f.push(&bytes[from..c]).unwrap());
                from = c;
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(f.pending().is_empty());
        }

        /// Arbitrary bytes, and valid streams with bytes changed: an error
        /// or messages, never a panic, and never more held than the cap.
        #[test]
        fn garbage_never_panics(
            junk in prop::collection::vec(any::<u8>(), 0..512),
            msg in message(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut f = Framer::with_max(256);
            if f.push(&junk).is_ok() {
                prop_assert!(f.pending().len() <= 256);
            }
            let mut bytes = serde_json::to_vec(&msg).unwrap();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let mut f = Framer::new();
            let _ = f.push(&bytes);
        }
    }
}
