//! Device tree blobs (FDT): dropping properties in place, as libfdt's `fdt_nop_property`
//! does, so a distribution's device tree can describe a board as QEMU models it.
//!
//! The format is the Devicetree Specification's (chapter 5): a header of big-endian words,
//! then a structure block of 4-byte-aligned tokens. A dropped property's token, header and
//! value become `FDT_NOP` words, which every reader skips: no offset or size changes.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// A blob that is not a well-formed device tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid device tree blob: {0}")]
pub struct FdtError(&'static str);

/// Properties to drop from every node that is compatible with a given string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropProperties {
    /// One of the node's `compatible` strings.
    pub compatible: &'static str,
    /// The properties' names.
    pub properties: &'static [&'static str],
}

/// One property of one node: where its bytes are and what it says.
struct Property<'a> {
    name: &'a [u8],
    value: &'a [u8],
    /// From its `FDT_PROP` token to the end of its padded value.
    span: std::ops::Range<usize>,
}

/// `blob` with `drop`'s properties replaced by `FDT_NOP`s. Nodes are matched by
/// `compatible` rather than path, as QEMU's own device-tree fix-ups do, so a renamed node
/// still matches. Returns the blob and how many properties were dropped.
pub fn drop_properties(blob: &[u8], drop: &[DropProperties]) -> Result<(Vec<u8>, usize), FdtError> {
    let nodes = parse(blob)?;
    let mut out = blob.to_vec();
    let mut dropped = 0;
    for properties in &nodes {
        let compatible = properties
            .iter()
            .find(|p| p.name == b"compatible")
            .map(|p| p.value)
            .unwrap_or_default();
        for rule in drop {
            let matches = compatible
                .split(|&b| b == 0)
                .any(|c| c == rule.compatible.as_bytes());
            if !matches {
                continue;
            }
            for property in properties
                .iter()
                .filter(|p| rule.properties.iter().any(|n| n.as_bytes() == p.name))
            {
                for word in out[property.span.clone()].chunks_exact_mut(4) {
                    word.copy_from_slice(&NOP.to_be_bytes());
                }
                dropped += 1;
            }
        }
    }
    Ok((out, dropped))
}

/// Every node's own properties (not its children's), in blob order.
fn parse(blob: &[u8]) -> Result<Vec<Vec<Property<'_>>>, FdtError> {
    let word = |offset: usize| -> Result<u32, FdtError> {
        let bytes = blob.get(offset..offset + 4).ok_or(FdtError("truncated"))?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    if word(0)? != MAGIC {
        return Err(FdtError("bad magic"));
    }
    if usize::try_from(word(4)?).ok() != Some(blob.len()) {
        return Err(FdtError("totalsize is not the blob's size"));
    }
    let to_usize = |v: u32| usize::try_from(v).map_err(|_| FdtError("offset overflow"));
    let structs = to_usize(word(8)?)?;
    let strings = to_usize(word(12)?)?;
    let struct_end = structs
        .checked_add(to_usize(word(36)?)?)
        .filter(|&end| end <= blob.len())
        .ok_or(FdtError("structure block out of bounds"))?;
    let string_at = |offset: usize| -> Result<&[u8], FdtError> {
        let rest = strings
            .checked_add(offset)
            .and_then(|start| blob.get(start..))
            .ok_or(FdtError("property name out of bounds"))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(FdtError("unterminated property name"))?;
        Ok(&rest[..len])
    };
    let aligned = |n: usize| n.div_ceil(4) * 4;

    let mut nodes: Vec<Vec<Property>> = Vec::new();
    // Indexes into `nodes` of the nodes open around the cursor.
    let mut open: Vec<usize> = Vec::new();
    let mut at = structs;
    while at < struct_end {
        match word(at)? {
            BEGIN_NODE => {
                let name = blob
                    .get(at + 4..struct_end)
                    .ok_or(FdtError("truncated node"))?;
                let len = name
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(FdtError("unterminated node name"))?;
                open.push(nodes.len());
                nodes.push(Vec::new());
                at += 4 + aligned(len + 1);
            }
            END_NODE => {
                open.pop().ok_or(FdtError("unbalanced end of node"))?;
                at += 4;
            }
            PROP => {
                let len = to_usize(word(at + 4)?)?;
                let name = string_at(to_usize(word(at + 8)?)?)?;
                let end = at + 12 + aligned(len);
                let value = blob
                    .get(at + 12..at + 12 + len)
                    .filter(|_| end <= struct_end)
                    .ok_or(FdtError("property value out of bounds"))?;
                let node = *open.last().ok_or(FdtError("property outside a node"))?;
                nodes[node].push(Property {
                    name,
                    value,
                    span: at..end,
                });
                at = end;
            }
            NOP => at += 4,
            END => return Ok(nodes),
            _ => return Err(FdtError("unknown structure token")),
        }
    }
    Err(FdtError("no end token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with the root and one child, each with properties, built by hand.
    fn blob() -> Vec<u8> {
        let mut strings = Vec::new();
        let mut name_offset = |name: &str| {
            let offset = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            offset
        };
        let mut structs: Vec<u8> = Vec::new();
        let push_word = |s: &mut Vec<u8>, w: u32| s.extend_from_slice(&w.to_be_bytes());
        let node = |s: &mut Vec<u8>, name: &str| {
            push_word(s, BEGIN_NODE);
            s.extend_from_slice(name.as_bytes());
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        let compatible = name_offset("compatible");
        let vmmc = name_offset("vmmc-supply");
        let status = name_offset("status");
        let prop = |s: &mut Vec<u8>, nameoff: u32, value: &[u8]| {
            s.extend_from_slice(&PROP.to_be_bytes());
            s.extend_from_slice(&(value.len() as u32).to_be_bytes());
            s.extend_from_slice(&nameoff.to_be_bytes());
            s.extend_from_slice(value);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        node(&mut structs, "");
        prop(
            &mut structs,
            compatible,
            b"raspberrypi,4-model-b\0brcm,bcm2711\0",
        );
        prop(&mut structs, vmmc, &[0, 0, 0, 0x20]);
        node(&mut structs, "mmc@7e340000");
        prop(&mut structs, vmmc, &[0, 0, 0, 0x20]);
        prop(&mut structs, compatible, b"brcm,bcm2711-emmc2\0");
        prop(&mut structs, status, b"okay\0");
        push_word(&mut structs, END_NODE);
        push_word(&mut structs, END_NODE);
        push_word(&mut structs, END);

        let header_len = 40u32;
        let reserve_map = [0u8; 16];
        let off_rsv = header_len;
        let off_struct = off_rsv + reserve_map.len() as u32;
        let off_strings = off_struct + structs.len() as u32;
        let total = off_strings + strings.len() as u32;
        let mut out = Vec::new();
        for w in [
            MAGIC,
            total,
            off_struct,
            off_strings,
            off_rsv,
            17,
            16,
            0,
            strings.len() as u32,
            structs.len() as u32,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&reserve_map);
        out.extend_from_slice(&structs);
        out.extend_from_slice(&strings);
        out
    }

    const EMMC2_SUPPLIES: DropProperties = DropProperties {
        compatible: "brcm,bcm2711-emmc2",
        properties: &["vmmc-supply", "vqmmc-supply"],
    };

    #[test]
    fn drops_only_the_matching_nodes_properties() {
        let original = blob();
        let (fixed, dropped) = drop_properties(&original, &[EMMC2_SUPPLIES]).unwrap();
        assert_eq!(
            dropped, 1,
            "the root's vmmc-supply stays: it is not compatible"
        );
        assert_eq!(fixed.len(), original.len());
        let nodes = parse(&fixed).unwrap();
        let names = |node: &Vec<Property>| -> Vec<String> {
            node.iter()
                .map(|p| String::from_utf8_lossy(p.name).into_owned())
                .collect()
        };
        assert_eq!(names(&nodes[0]), ["compatible", "vmmc-supply"]);
        assert_eq!(names(&nodes[1]), ["compatible", "status"]);
        assert_eq!(nodes[1][1].value, b"okay\0", "later properties are intact");
        let (again, none) = drop_properties(&fixed, &[EMMC2_SUPPLIES]).unwrap();
        assert_eq!((again, none), (fixed, 0), "idempotent");
    }

    #[test]
    fn refuses_malformed_blobs() {
        let good = blob();
        assert_eq!(
            drop_properties(&good[..good.len() - 1], &[]).unwrap_err(),
            FdtError("totalsize is not the blob's size")
        );
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert_eq!(
            drop_properties(&bad_magic, &[]).unwrap_err(),
            FdtError("bad magic")
        );
        assert!(drop_properties(&[], &[]).is_err());
        // A property length running past the structure block.
        let mut long = good.clone();
        let first_prop = 40 + 16 + 8;
        long[first_prop + 4..first_prop + 8].copy_from_slice(&0xffff_u32.to_be_bytes());
        assert_eq!(
            drop_properties(&long, &[]).unwrap_err(),
            FdtError("property value out of bounds")
        );
    }
}
