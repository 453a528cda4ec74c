//! The stateless half of ingestion: a record decoded and its user hashed.
//!
//! Decoding and hashing are most of the cost of an event and need nothing from the stream,
//! so they may run on any thread, in any order. Everything that depends on the order of
//! events (the clock, late / future, the feature registry, the session watermark, the
//! counters) is the [`Ingestor`](crate::ingest::Ingestor)'s sequential half. The single
//! threaded path goes through the very same two steps, which is what keeps a parallel
//! decoder's answer identical to it.
//!
//! A [`PreparedBatch`] carries the results of many records across threads: it owns its
//! text (the few feature names, and the dimension values in a [`ValueBuffer`] the decoder
//! writes to directly), so a batch costs no allocation per event and can be cleared and
//! reused.

use std::borrow::Cow;
use std::ops::Range;

use crate::decode::Decoder;
use crate::dimensions::{DimValues, ValueBuffer};
use crate::event::{EventKind, OutcomeValue, Rejection};
use crate::funnel_rules::StepTags;
use crate::sketch::UserHash;

/// A decoded record, reduced to what routing needs; the user id is only kept hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared<'a> {
    pub user: UserHash,
    /// The partitioner's hash of the user id: which virtual partition the record goes to.
    pub partition_hash: u32,
    /// The user's key, or the user and the session id hashed together.
    pub session_key: u64,
    /// Event time in epoch milliseconds; `None` when the record has none.
    pub ts_ms: Option<i64>,
    pub kind: EventKind,
    pub feature: Option<Cow<'a, str>>,
    pub outcome: Option<OutcomeValue>,
    /// The value of each configured dimension, by position, kept in a [`ValueBuffer`].
    pub dimensions: DimValues<'a>,
    /// What the funnels match of its raw name and feature (the name is not kept).
    pub tags: StepTags,
}

impl Decoder {
    /// Decodes one record and hashes its user; its dimension values are added to `values`.
    /// Pure: the same bytes always give the same answer, on any thread.
    pub fn prepare<'a>(
        &self,
        bytes: &'a [u8],
        values: &'a mut ValueBuffer,
    ) -> Result<Prepared<'a>, Rejection> {
        let start = values.len();
        let event = self.decode_into(bytes, values)?;
        let user = UserHash::of(&event.user);
        let partition_hash = self
            .partitioner
            .map_or(0, |partitioner| partitioner.hash(event.user.as_bytes()));
        let session_key = match &event.session_id {
            Some(id) => xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), user.key),
            None => user.key,
        };
        // Without funnels the tagger is empty: no look-up at all.
        let tags = if self.tagger.is_empty() {
            StepTags::default()
        } else {
            self.tagger.tags(&event.name, event.feature.as_deref())
        };
        Ok(Prepared {
            user,
            partition_hash,
            session_key,
            ts_ms: event.ts_ms,
            kind: event.kind,
            feature: event.feature,
            outcome: event.outcome,
            dimensions: values.since(start),
            tags,
        })
    }
}

/// The prepared records of a block of input, in input order.
#[derive(Debug, Default)]
pub struct PreparedBatch {
    records: Vec<Result<Stored, Rejection>>,
    /// Feature names, back to back; records refer to them by range.
    text: String,
    /// Dimension values of the records that have any, back to back.
    values: ValueBuffer,
}

#[derive(Debug)]
struct Stored {
    user: UserHash,
    partition_hash: u32,
    session_key: u64,
    ts_ms: Option<i64>,
    kind: EventKind,
    feature: Option<Range<usize>>,
    outcome: Option<OutcomeValue>,
    /// Its values in `values` (an empty range when no dimension is configured).
    dimensions: (u32, u32),
    tags: StepTags,
}

impl PreparedBatch {
    /// Prepares `bytes` ([`Decoder::prepare`]) as the batch's next record.
    pub fn prepare(&mut self, decoder: &Decoder, bytes: &[u8]) {
        let stored = decoder.prepare(bytes, &mut self.values).map(|p| Stored {
            user: p.user,
            partition_hash: p.partition_hash,
            session_key: p.session_key,
            ts_ms: p.ts_ms,
            kind: p.kind,
            feature: p.feature.map(|name| {
                let start = self.text.len();
                self.text.push_str(&name);
                start..self.text.len()
            }),
            outcome: p.outcome,
            dimensions: p.dimensions.range(),
            tags: p.tags,
        });
        self.records.push(stored);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties the batch, keeping its memory for the next block.
    pub fn clear(&mut self) {
        self.records.clear();
        self.text.clear();
        self.values.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<Prepared<'_>, Rejection>> {
        self.records.iter().map(|record| match record {
            Ok(s) => Ok(Prepared {
                user: s.user,
                partition_hash: s.partition_hash,
                session_key: s.session_key,
                ts_ms: s.ts_ms,
                kind: s.kind,
                feature: s
                    .feature
                    .as_ref()
                    .map(|range| Cow::Borrowed(&self.text[range.clone()])),
                outcome: s.outcome,
                dimensions: DimValues::at(&self.values, s.dimensions.0, s.dimensions.1),
                tags: s.tags,
            }),
            Err(reason) => Err(*reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineSettings;
    use crate::dimensions::DimValue;

    #[test]
    fn a_batch_gives_back_what_was_prepared() {
        let dimension = |name: &str| crate::dimensions::DimensionSettings {
            name: name.into(),
            paths: vec![format!("/{name}")],
            max_values: 5,
        };
        let decoder = Decoder::new(&EngineSettings {
            dimensions: vec![
                dimension("platform"),
                dimension("tenant"),
                dimension("plan"),
            ],
            ..EngineSettings::default()
        });
        let records: [&[u8]; 5] = [
            br#"{"user_id":"u1","event":"feature_used","feature":"export","ts":1,"tenant":"acme"}"#,
            br#"{"user_id":"u2","event":"login","session_id":"s","ts":2}"#,
            b"not json",
            br#"{"user_id":"u3","event":"feature_used","feature":"sh\u0061re","platform":"w\u0065b","plan":""}"#,
            br#"{"user_id":"u4","event":"login","platform":7,"tenant":"acme"}"#,
        ];
        let mut batch = PreparedBatch::default();
        for record in records {
            batch.prepare(&decoder, record);
        }
        // Each record prepared on its own, into a buffer of its own.
        let mut buffers = vec![ValueBuffer::default(); records.len()];
        let direct: Vec<_> = records
            .iter()
            .zip(&mut buffers)
            .map(|(r, values)| decoder.prepare(r, values))
            .collect();
        assert_eq!(batch.iter().collect::<Vec<_>>(), direct);
        assert_eq!(
            direct[3].as_ref().unwrap().feature.as_deref(),
            Some("share")
        );
        assert_eq!(direct[2], Err(Rejection::NotJson));
        let values = |i: usize| {
            let values = direct[i].as_ref().unwrap().dimensions;
            values.iter().collect::<Vec<_>>()
        };
        assert_eq!(
            values(0),
            [
                DimValue::None,
                DimValue::Text("acme".into()),
                DimValue::None
            ]
        );
        assert_eq!(
            values(3),
            [
                DimValue::Text("web".into()),
                DimValue::None,
                DimValue::Invalid
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
    }
}
