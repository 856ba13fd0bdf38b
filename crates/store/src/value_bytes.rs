//! How a stored value travels in JSON (the embedded store's log, snapshot
//! and peer messages): as a string when it is UTF-8, which nearly every
//! value is (records are JSON), else as an array of numbers. serde's
//! default for `Vec<u8>` is the array alone: four times the bytes of the
//! value and a number to parse per byte, the most of a restart's work
//! when it decodes the log. Both forms decode, so data written before
//! this encoding still reads.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(value) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.collect_seq(value),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(ValueVisitor)
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value as a string or an array of bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<u8>, E> {
        Ok(v.into_bytes())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn text_travels_as_a_string_and_other_bytes_as_numbers() {
        let json = serde_json::to_string(&V(br#"{"a":"b"}"#.to_vec())).unwrap();
        assert_eq!(json, r#""{\"a\":\"b\"}""#);
        assert_eq!(serde_json::to_string(&V(vec![0xff, 0])).unwrap(), "[255,0]");
        for v in [
            b"".to_vec(),
            b"plain".to_vec(),
            vec![0xff, 0xfe, 1],
            "é\n\"".into(),
        ] {
            let back: V =
                serde_json::from_str(&serde_json::to_string(&V(v.clone())).unwrap()).unwrap();
            assert_eq!(back.0, v);
        }
    }

    #[test]
    fn the_earlier_array_form_still_decodes() {
        let back: V = serde_json::from_str("[104,105]").unwrap();
        assert_eq!(back.0, b"hi");
        assert!(serde_json::from_str::<V>("[256]").is_err());
        assert!(serde_json::from_str::<V>("7").is_err());
    }
}
