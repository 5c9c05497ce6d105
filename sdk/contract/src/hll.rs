//! A HyperLogLog sketch with a fixed hash, so that every guest and host
//! builds bit-identical sketches from the same values.

/// Index bits: 2^12 registers of one byte, 4 KiB per sketch, about 1.6%
/// standard error.
pub const PRECISION: u32 = 12;
/// Number of registers in a [`Sketch`].
pub const REGISTERS: usize = 1 << PRECISION;
/// Largest value a register can hold (leading zeros of the remaining
/// 52 bits, plus one).
const MAX_RANK: u8 = (64 - PRECISION + 1) as u8;

/// A HyperLogLog sketch of a set of strings: estimates how many distinct
/// values were inserted, and merges with another sketch by taking the larger
/// of each register, so partial sketches from many tasks combine into the
/// sketch of their union.
///
/// ```
/// use quarry_contract::Sketch;
///
/// let mut a = Sketch::new();
/// let mut b = Sketch::new();
/// for i in 0..6000 {
///     a.insert(&format!("10.0.{}.{}", i / 256, i % 256));
/// }
/// for i in 3000..9000 {
///     b.insert(&format!("10.0.{}.{}", i / 256, i % 256));
/// }
/// a.merge(&b);
/// let estimate = a.estimate() as f64;
/// assert!((estimate - 9000.0).abs() < 9000.0 * 0.05, "{estimate}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Sketch {
    registers: Vec<u8>,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

impl Sketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Sketch {
            registers: vec![0; REGISTERS],
        }
    }

    /// A sketch from its registers, as carried by the WIT and protobuf
    /// records; refuses anything another Quarry component could not have
    /// produced.
    pub fn from_registers(registers: Vec<u8>) -> Result<Self, String> {
        if registers.len() != REGISTERS {
            return Err(format!(
                "a distinct-count sketch has {REGISTERS} registers, got {}; build it with quarry-sdk",
                registers.len()
            ));
        }
        if let Some(bad) = registers.iter().find(|&&r| r > MAX_RANK) {
            return Err(format!(
                "a distinct-count sketch register holds at most {MAX_RANK}, got {bad}; build it with quarry-sdk"
            ));
        }
        Ok(Sketch { registers })
    }

    /// The registers, one byte each.
    pub fn registers(&self) -> &[u8] {
        &self.registers
    }

    /// The registers, consumed.
    pub fn into_registers(self) -> Vec<u8> {
        self.registers
    }

    /// Adds `value` to the sketched set.
    pub fn insert(&mut self, value: &str) {
        let hash = hash(value);
        let index = (hash >> (64 - PRECISION)) as usize;
        let rest = hash << PRECISION;
        let rank = (rest.leading_zeros() + 1).min(u32::from(MAX_RANK)) as u8;
        let register = &mut self.registers[index];
        *register = (*register).max(rank);
    }

    /// Makes `self` the sketch of the union of both sets.
    pub fn merge(&mut self, other: &Sketch) {
        for (mine, theirs) in self.registers.iter_mut().zip(&other.registers) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// The estimated number of distinct values inserted.
    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &register in &self.registers {
            sum += 2f64.powi(-i32::from(register));
            zeros += usize::from(register == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        // Linear counting is more accurate while many registers are empty.
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// The 64-bit hash every Quarry component uses for sketches: FNV-1a over the
/// UTF-8 bytes, then the MurmurHash3 finaliser so that the high bits (the
/// register index) are well mixed. Fixed forever: changing it would make
/// sketches from different versions unmergeable.
pub fn hash(value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in value.as_bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(range: std::ops::Range<u32>) -> Sketch {
        let mut sketch = Sketch::new();
        for i in range {
            sketch.insert(&format!("value-{i}"));
        }
        sketch
    }

    #[test]
    fn estimates_within_a_few_percent_over_many_magnitudes() {
        for n in [1u32, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let estimate = sketch_of(0..n).estimate() as f64;
            let error = (estimate - f64::from(n)).abs() / f64::from(n);
            assert!(error < 0.05, "n={n} estimate={estimate} error={error}");
        }
        assert_eq!(Sketch::new().estimate(), 0);
    }

    #[test]
    fn merging_is_the_sketch_of_the_union_and_order_free() {
        let mut ab = sketch_of(0..5_000);
        ab.merge(&sketch_of(2_500..10_000));
        let mut ba = sketch_of(2_500..10_000);
        ba.merge(&sketch_of(0..5_000));
        assert_eq!(ab, ba);
        assert_eq!(ab, sketch_of(0..10_000));
        let mut twice = ab.clone();
        twice.merge(&ab);
        assert_eq!(twice, ab, "merge is idempotent");
    }

    #[test]
    fn hash_is_fixed() {
        // Pinned: sketches built by older modules must stay mergeable.
        assert_eq!(hash("quarry"), 0x3172_3575_286b_6b2b);
        assert_ne!(hash("a"), hash("b"));
    }

    #[test]
    fn foreign_registers_are_refused_with_the_reason() {
        assert!(
            Sketch::from_registers(vec![0; 10])
                .unwrap_err()
                .contains("4096 registers, got 10")
        );
        let mut registers = vec![0; REGISTERS];
        registers[7] = 60;
        assert!(
            Sketch::from_registers(registers)
                .unwrap_err()
                .contains("at most 53, got 60")
        );
        let sketch = sketch_of(0..100);
        assert_eq!(
            Sketch::from_registers(sketch.registers().to_vec()).unwrap(),
            sketch
        );
    }
}
