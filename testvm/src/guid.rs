//! A GUID/UUID value: parsed from and shown as the lower-case 8-4-4-4-12 text form, and encoded
//! either as plain bytes (ext4 superblock, RFC 4122 order) or mixed-endian (GPT, UEFI order).

use std::fmt;
use std::str::FromStr;

/// A 128-bit GUID, stored in the byte order of its text form (RFC 4122 "network" order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

/// Why a text did not parse as a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a GUID of the form 01234567-89ab-cdef-0123-456789abcdef")]
pub struct GuidParseError {
    /// The rejected text.
    pub text: String,
}

/// Lengths of the hex groups of the text form, in order.
const GROUP_LENGTHS: [usize; 5] = [8, 4, 4, 4, 12];

impl Guid {
    /// The GPT partition type "Linux filesystem data" (UEFI spec 2.10 §5.3.3 lists the scheme;
    /// the value is the one util-linux and systemd's Discoverable Partitions Spec use).
    pub const LINUX_FILESYSTEM: Guid = Guid([
        0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ]);

    /// The EFI System Partition type, c12a7328-f81f-11d2-ba4b-00a0c93ec93b (UEFI spec, "GPT
    /// partition type GUIDs"): where a vfat /boot shared with the firmware lives.
    pub const EFI_SYSTEM: Guid = Guid([
        0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ]);

    /// The GPT partition type "Linux LVM", e6d6d379-f507-44c2-a23c-238f2a3df928 (the value
    /// util-linux's fdisk and systemd's Discoverable Partitions Spec use): an LVM physical volume.
    pub const LINUX_LVM: Guid = Guid([
        0xe6, 0xd6, 0xd3, 0x79, 0xf5, 0x07, 0x44, 0xc2, 0xa2, 0x3c, 0x23, 0x8f, 0x2a, 0x3d, 0xf9,
        0x28,
    ]);

    /// The all-zero GUID, which GPT uses for an unused partition entry.
    pub const NIL: Guid = Guid([0; 16]);

    /// A GUID from its bytes in text order.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The bytes in text order: what the ext4 superblock stores and `mkfs.ext4 -U` reads.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The bytes as GPT stores them: UEFI spec 2.10 appendix A: the first three fields
    /// (4, 2 and 2 bytes) little-endian, the last 8 bytes as they are.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let b = self.0;
        let mut out = b;
        out[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        out[4..6].copy_from_slice(&[b[5], b[4]]);
        out[6..8].copy_from_slice(&[b[7], b[6]]);
        out
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(text: &str) -> Result<Guid, GuidParseError> {
        let error = || GuidParseError {
            text: text.to_owned(),
        };
        let groups: Vec<&str> = text.split('-').collect();
        let lengths_match = groups.len() == GROUP_LENGTHS.len()
            && groups.iter().zip(GROUP_LENGTHS).all(|(g, n)| g.len() == n);
        if !lengths_match {
            return Err(error());
        }
        let hex: String = groups.concat();
        // `from_str_radix` alone would also take a leading `+`.
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(error());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or_else(error)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| error())?;
        }
        Ok(Guid(bytes))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut start = 0;
        for (i, len) in GROUP_LENGTHS.iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            for byte in &self.0[start..start + len / 2] {
                write!(f, "{byte:02x}")?;
            }
            start += len / 2;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_round_trip(text: &str, expected: &str) {
        let guid: Guid = text.parse().unwrap();
        assert_eq!(guid.to_string(), expected);
    }

    #[test]
    fn round_trips_and_lowercases() {
        check_round_trip(
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "0fc63daf-8483-4772-8e79-3d69d8477de4",
        );
        check_round_trip(
            "00000000-0000-0000-0000-000000000000",
            "00000000-0000-0000-0000-000000000000",
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "0fc63daf84834772-8e79-3d69d8477de4",
            "0fc63daf-8483-4772-8e79-3d69d8477de",
            "0fc63daf-8483-4772-8e79-3d69d8477dex",
            "0fc63daf-8483-4772-8e79-3d69d8477de4-",
            "+fc63daf-8483-4772-8e79-3d69d8477de4",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn linux_filesystem_constant_matches_its_text() {
        assert_eq!(
            Guid::LINUX_FILESYSTEM,
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4".parse().unwrap()
        );
    }

    #[test]
    fn gpt_encoding_is_mixed_endian() {
        // UEFI spec 2.10 appendix A gives this layout for the EFI System Partition type GUID
        // C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
        let esp: Guid = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".parse().unwrap();
        assert_eq!(
            esp.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
    }
}
