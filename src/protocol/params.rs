//! Decoding the parameters of a COM_STMT_EXECUTE (MySQL binary protocol), so a
//! prepared write can be logged with its typed values.
//!
//! ```text
//! 0x17 | stmt_id u32 | flags u8 | iteration_count u32
//!      | null_bitmap ((n + 7) / 8 bytes) | new_params_bound u8
//!      | [types: n × (type u8, flags u8)]   when new_params_bound = 1
//!      | values of the non-NULL parameters without long data, in order
//! ```
//! A client sends the types with the first execution and may leave them out later;
//! parameters sent with COM_STMT_SEND_LONG_DATA have no value here.

use super::packet::Reader;

/// A parameter value as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Bytes(Vec<u8>),
    /// year, month, day, hour, minute, second, microsecond
    Date(u16, u8, u8, u8, u8, u8, u32),
    /// negative, days, hours, minutes, seconds, microseconds
    Time(bool, u32, u8, u8, u8, u32),
    /// Sent with COM_STMT_SEND_LONG_DATA (the caller has the bytes).
    LongData,
}

/// Column type codes of the binary protocol.
mod types {
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
}

/// Decoded values, and the parameter types they were decoded with.
pub type Decoded = (Vec<ParamValue>, Vec<(u8, u8)>);

/// The parameters of an execute packet for a statement with `count` parameters.
/// `cached` are the types of the previous execution (used when the packet has none);
/// `long_data[i]` says whether parameter `i` was sent as long data. Returns the values
/// and the types used, or `None` for a malformed packet.
pub fn decode_execute(
    payload: &[u8],
    count: usize,
    cached: Option<&[(u8, u8)]>,
    long_data: &[bool],
) -> Option<Decoded> {
    let mut r = Reader::new(payload.get(1..)?);
    r.u32()?; // statement id
    r.u8()?; // flags
    r.u32()?; // iteration count
    if count == 0 {
        return Some((vec![], vec![]));
    }
    let bitmap = r.take(count.div_ceil(8))?.to_vec();
    let bound = r.u8()?;
    let types: Vec<(u8, u8)> = if bound == 1 {
        (0..count)
            .map(|_| Some((r.u8()?, r.u8()?)))
            .collect::<Option<_>>()?
    } else {
        cached?.to_vec()
    };
    if types.len() != count {
        return None;
    }
    let mut values = Vec::with_capacity(count);
    for (i, &(t, flags)) in types.iter().enumerate() {
        let is_null = bitmap[i / 8] & (1 << (i % 8)) != 0;
        if is_null || t == types::NULL {
            values.push(ParamValue::Null);
            continue;
        }
        if long_data.get(i).copied().unwrap_or(false) {
            values.push(ParamValue::LongData);
            continue;
        }
        values.push(decode_value(&mut r, t, flags & 0x80 != 0)?);
    }
    Some((values, types))
}

/// A COM_STMT_EXECUTE / FETCH / CLOSE / RESET / SEND_LONG_DATA payload addressed to
/// statement `id` instead (the id is the 4 bytes after the command byte).
pub fn readdress(payload: &[u8], id: u32) -> Vec<u8> {
    let mut out = payload.to_vec();
    if let Some(slot) = out.get_mut(1..5) {
        slot.copy_from_slice(&id.to_le_bytes());
    }
    out
}

/// Whether an execute payload for a statement with `count` parameters carries their
/// types (its new-params-bound flag is set). `None` for a malformed packet.
pub fn execute_binds_types(payload: &[u8], count: usize) -> Option<bool> {
    if count == 0 {
        return Some(false);
    }
    payload.get(10 + count.div_ceil(8)).map(|flag| *flag == 1)
}

/// An execute payload that carries `types` when it has none of its own, for a backend
/// that has not seen them (the client sent them to another one). Payloads that bind
/// their own types, or of statements without parameters, are returned as they are.
pub fn execute_with_types(payload: &[u8], count: usize, types: &[(u8, u8)]) -> Option<Vec<u8>> {
    if count == 0 || execute_binds_types(payload, count)? {
        return Some(payload.to_vec());
    }
    if types.len() != count {
        return None;
    }
    let flag = 10 + count.div_ceil(8);
    let mut out = Vec::with_capacity(payload.len() + 2 * count);
    out.extend_from_slice(&payload[..flag]);
    out.push(1);
    for (t, f) in types {
        out.extend_from_slice(&[*t, *f]);
    }
    out.extend_from_slice(&payload[flag + 1..]);
    Some(out)
}

fn decode_value(r: &mut Reader<'_>, t: u8, unsigned: bool) -> Option<ParamValue> {
    use types::*;
    let int = |v: i64, u: u64| {
        if unsigned {
            ParamValue::UInt(u)
        } else {
            ParamValue::Int(v)
        }
    };
    Some(match t {
        TINY => {
            let b = r.u8()?;
            int(b as i8 as i64, b as u64)
        }
        SHORT | YEAR => {
            let v = r.u16()?;
            int(v as i16 as i64, v as u64)
        }
        LONG | INT24 => {
            let v = r.u32()?;
            int(v as i32 as i64, v as u64)
        }
        LONGLONG => {
            let b = r.take(8)?;
            let v = u64::from_le_bytes(b.try_into().ok()?);
            int(v as i64, v)
        }
        FLOAT => ParamValue::Float(f32::from_le_bytes(r.take(4)?.try_into().ok()?)),
        DOUBLE => ParamValue::Double(f64::from_le_bytes(r.take(8)?.try_into().ok()?)),
        DATE | DATETIME | TIMESTAMP => {
            let len = r.u8()?;
            let b = r.take(len as usize)?;
            let get = |i: usize| b.get(i).copied().unwrap_or(0);
            let year = u16::from_le_bytes([get(0), get(1)]);
            let micros = if len >= 11 {
                u32::from_le_bytes([get(7), get(8), get(9), get(10)])
            } else {
                0
            };
            ParamValue::Date(year, get(2), get(3), get(4), get(5), get(6), micros)
        }
        TIME => {
            let len = r.u8()?;
            let b = r.take(len as usize)?;
            let get = |i: usize| b.get(i).copied().unwrap_or(0);
            let days = u32::from_le_bytes([get(1), get(2), get(3), get(4)]);
            let micros = if len >= 12 {
                u32::from_le_bytes([get(8), get(9), get(10), get(11)])
            } else {
                0
            };
            ParamValue::Time(get(0) != 0, days, get(5), get(6), get(7), micros)
        }
        // Strings, blobs, decimals, JSON, BIT, ENUM, SET, GEOMETRY: length-encoded.
        _ => ParamValue::Bytes(r.lenenc_bytes()?.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_typed_parameters() {
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        p.push(0b0000_0010); // second of four is NULL
        p.push(1); // types follow
        p.extend_from_slice(&[8, 0, 253, 0, 12, 0, 3, 0x80]);
        p.extend_from_slice(&(-5i64).to_le_bytes());
        p.extend_from_slice(&[11, 0xE8, 0x07, 2, 29, 23, 59, 58, 0x40, 0xE2, 0x01, 0]);
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        let (v, t) = decode_execute(&p, 4, None, &[]).unwrap();
        assert_eq!(
            v,
            vec![
                ParamValue::Int(-5),
                ParamValue::Null,
                ParamValue::Date(2024, 2, 29, 23, 59, 58, 123_456),
                ParamValue::UInt(u32::MAX as u64),
            ]
        );
        // A later execution without types uses the cached ones.
        let mut q = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0b0000_1110, 0];
        q.extend_from_slice(&7i64.to_le_bytes());
        let (v, _) = decode_execute(&q, 4, Some(&t), &[]).unwrap();
        assert_eq!(v[0], ParamValue::Int(7));
        // Long data has no value in the packet.
        let mut l = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 252, 0];
        l.extend_from_slice(&[]);
        let (v, _) = decode_execute(&l, 1, None, &[true]).unwrap();
        assert_eq!(v, vec![ParamValue::LongData]);
    }

    #[test]
    fn truncated_packets_are_none() {
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0];
        p.extend_from_slice(&[1, 2, 3]);
        assert!(decode_execute(&p, 1, None, &[]).is_none());
        assert!(decode_execute(&[0x17, 1], 1, None, &[]).is_none());
        assert!(decode_execute(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], 1, None, &[]).is_none());
    }

    #[test]
    fn readdressed_executions_carry_the_cached_types() {
        // Statement 1, two parameters, no types bound: 7 and NULL.
        let mut q = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0b0000_0010, 0];
        q.extend_from_slice(&7i64.to_le_bytes());
        assert_eq!(execute_binds_types(&q, 2), Some(false));
        let types = [(8, 0), (253, 0)];
        let moved = readdress(&execute_with_types(&q, 2, &types).unwrap(), 0x8000_0005);
        assert_eq!(&moved[1..5], &0x8000_0005u32.to_le_bytes());
        assert_eq!(execute_binds_types(&moved, 2), Some(true));
        let (v, t) = decode_execute(&moved, 2, None, &[]).unwrap();
        assert_eq!(v, vec![ParamValue::Int(7), ParamValue::Null]);
        assert_eq!(t, types.to_vec());
        // A packet that binds its own types is left as it is.
        assert_eq!(
            execute_with_types(&moved, 2, &[(3, 0), (3, 0)]).unwrap(),
            moved
        );
        // Wrong number of cached types, or a truncated packet.
        assert!(execute_with_types(&q, 2, &[(8, 0)]).is_none());
        assert!(execute_with_types(&q[..10], 2, &types).is_none());
    }
}
