//! Which partition a record goes to: keyed records by Kafka's murmur2 hash of the key (so the
//! same key lands on the same partition as with Kafka's default partitioner), keyless records
//! round robin.

/// Kafka's murmur2 (seed 0x9747b28c), as its `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (Kafka's `toPositive(murmur2(key)) % n`).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_murmur2() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
        // librdkafka's `unittest_murmur2` (src/rdmurmur2.c), its `java_murmur2_results`:
        // Kafka's Java output, covering every tail length (0 to 3 bytes) and the empty key.
        let java: [(&[u8], u32); 11] = [
            (b"kafka", 0xd067_cf64),
            (b"giberish123456789", 0x8f55_2b0c),
            (b"1234", 0x9fc9_7b14),
            (b"234", 0xe7c0_09ca),
            (b"34", 0x8739_30da),
            (b"4", 0x5a4b_5ca1),
            (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x7842_4f1c),
            (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62_b377),
            (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4_e09e),
            (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8_b43f),
            (b"", 0x106e_08d9),
        ];
        for (key, hash) in java {
            assert_eq!(
                murmur2(key),
                hash as i32,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    /// Kafka's `toPositive(murmur2(key)) % n` (sign bit cleared, not `abs`) for the keys of
    /// Kafka's and librdkafka's murmur2 tests. The partitions were worked out from the
    /// hashes those tests assert, not from this crate: a partitioner that ignores the key
    /// (say one returning 0), or that takes `abs` of the hash, fails.
    #[test]
    fn keys_land_on_kafkas_partitions() {
        const COUNTS: [u32; 8] = [2, 3, 4, 7, 10, 12, 16, 100];
        // (key, Kafka's murmur2, partition for each of COUNTS)
        let cases: [(&[u8], i32, [u32; 8]); 17] = [
            (b"21", -973932308, [0, 0, 0, 3, 0, 0, 12, 40]),
            (b"foobar", -790332482, [0, 0, 2, 0, 6, 6, 14, 66]),
            (
                b"a-little-bit-long-string",
                -985981536,
                [0, 2, 0, 1, 2, 8, 0, 12],
            ),
            (
                b"a-little-bit-longer-string",
                -1486304829,
                [1, 2, 3, 0, 9, 11, 3, 19],
            ),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
                [1, 2, 1, 3, 7, 5, 13, 77],
            ),
            (b"abc", 479470107, [1, 0, 3, 4, 7, 3, 11, 7]),
            (b"kafka", 0xd067_cf64_u32 as i32, [0, 1, 0, 3, 0, 4, 4, 80]),
            (
                b"giberish123456789",
                0x8f55_2b0c_u32 as i32,
                [0, 2, 0, 5, 0, 8, 12, 20],
            ),
            (b"1234", 0x9fc9_7b14_u32 as i32, [0, 0, 0, 0, 0, 0, 4, 40]),
            (b"234", 0xe7c0_09ca_u32 as i32, [0, 2, 2, 4, 6, 2, 10, 66]),
            (b"34", 0x8739_30da_u32 as i32, [0, 0, 2, 6, 0, 6, 10, 70]),
            (b"4", 0x5a4b_5ca1, [1, 1, 1, 6, 3, 1, 1, 53]),
            (
                b"PreAmbleWillBeRemoved,ThePrePartThatIs",
                0x7842_4f1c,
                [0, 2, 0, 1, 8, 8, 12, 48],
            ),
            (
                b"reAmbleWillBeRemoved,ThePrePartThatIs",
                0x4a62_b377,
                [1, 2, 3, 6, 5, 11, 7, 55],
            ),
            (
                b"eAmbleWillBeRemoved,ThePrePartThatIs",
                0xe0e4_e09e_u32 as i32,
                [0, 1, 2, 3, 6, 10, 14, 46],
            ),
            (
                b"AmbleWillBeRemoved,ThePrePartThatIs",
                0x62b8_b43f,
                [1, 0, 3, 3, 5, 3, 15, 35],
            ),
            (b"", 0x106e_08d9, [1, 0, 1, 2, 1, 9, 9, 81]),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (key, hash, partitions) in cases {
            let name = String::from_utf8_lossy(key);
            assert_eq!(murmur2(key), hash, "{name:?}");
            for (count, expected) in COUNTS.into_iter().zip(partitions) {
                // The table itself follows Kafka's formula (guards against a typo in it).
                assert_eq!(
                    ((hash & 0x7fff_ffff) as u32) % count,
                    expected,
                    "table row {name:?} among {count}"
                );
                assert_eq!(
                    partition_for_key(key, count),
                    expected,
                    "{name:?} among {count} partitions"
                );
                if count == 3 {
                    seen.insert(expected);
                }
            }
            assert_eq!(partition_for_key(key, 1), 0);
        }
        assert_eq!(seen.len(), 3, "the keys cover every partition of 3");
    }

    #[test]
    fn same_key_same_partition() {
        for partitions in 1..16 {
            assert_eq!(
                partition_for_key(b"order-42", partitions),
                partition_for_key(b"order-42", partitions)
            );
            assert!(partition_for_key(b"order-42", partitions) < partitions);
        }
    }
}
