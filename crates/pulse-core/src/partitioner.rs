//! Which partition a user's events belong to: the producer's choice, reproduced.
//!
//! The partition is pulse's unit of state. Kafka says which partition a message came from;
//! `pulse replay` and `pulse demo` have no broker, so they put each record in the virtual
//! partition a producer keyed by the user id would have chosen. A file replayed with
//! `--partitions 12` thus gives each partition exactly the state a 12-partition topic keyed
//! by user would give, and a replayed history hands over to a live consumer group partition
//! by partition. Producers differ, so the function is a setting: Kafka's Java client (and
//! librdkafka's `murmur2_random`) hash keys with murmur2, librdkafka's default
//! (`consistent_random`) with CRC-32.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// `murmur2(key) & 0x7fffffff % partitions`: Kafka's Java client default.
    #[default]
    Murmur2,
    /// `crc32(key) % partitions`: librdkafka's default, `consistent_random`.
    Crc32,
}

impl Partitioner {
    pub const ALL: [Partitioner; 2] = [Partitioner::Murmur2, Partitioner::Crc32];

    /// The key's hash, before it is reduced to a partition number.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            Partitioner::Murmur2 => murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff,
            Partitioner::Crc32 => crc32fast::hash(key),
        }
    }

    /// The partition of `partitions` a producer sends `key` to.
    pub fn partition_of(self, key: &[u8], partitions: u32) -> u32 {
        self.hash(key) % partitions.max(1)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Crc32 => "crc32",
        }
    }

    /// librdkafka's `partitioner` property that makes a producer choose the same way.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2_random",
            Partitioner::Crc32 => "consistent_random",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors for its murmur2 (`UtilsTest.testMurmur2`): signed results
    /// of the 32-bit hash, before the sign bit is masked off.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, java) in cases {
            assert_eq!(Partitioner::Murmur2.hash(key), (java as u32) & 0x7fff_ffff);
        }
    }

    #[test]
    fn crc32_is_the_ieee_checksum() {
        // The check value of CRC-32/ISO-HDLC, the checksum zlib and librdkafka compute.
        assert_eq!(Partitioner::Crc32.hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn partitions_cover_the_range_evenly() {
        for partitioner in Partitioner::ALL {
            let mut counts = [0u32; 6];
            for user in 0..60_000 {
                let key = format!("user-{user}");
                counts[partitioner.partition_of(key.as_bytes(), 6) as usize] += 1;
            }
            assert!(
                counts.iter().all(|c| (9_000..11_000).contains(c)),
                "{partitioner:?}: {counts:?}"
            );
        }
    }
}
