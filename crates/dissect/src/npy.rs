//! The NumPy `.npy` format (NEP 1), as much of it as activations and result
//! arrays need: reading the header of a C-order, little-endian float32 or
//! float16 array (format versions 1 to 3), whose rows are then read in
//! place (see [`crate::recorded`]); and writing float32 and int64 arrays (version 1.0,
//! data aligned to 64 bytes as NumPy writes it).
//!
//! Every error names the file and what is wrong with it.

use std::path::Path;

/// Element types read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// A parsed header: where the data starts, its type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
}

impl Header {
    /// Elements in the array ([`parse_header`] checked that the product
    /// fits).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Bytes of a file's start that always hold its header (NumPy limits
/// headers to 10000 bytes unless told otherwise).
pub const HEAD_BYTES: usize = 1 << 16;

/// The product of `dims` (an array's elements), or `None` when it does not
/// fit in a `usize`.
pub fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Parses the header at the start of a file, given its first bytes
/// (`head`, at least the whole header: [`HEAD_BYTES`] or the whole file)
/// and its length, and checks that the file holds exactly the data it
/// declares.
pub fn parse_header(path: &Path, bytes: &[u8], file_len: u64) -> Result<Header, String> {
    let bad = |m: String| format!("{}: {m}", path.display());
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{minor}"
            )));
        }
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("truncated header".into()))?;
    let text = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| bad("the header is not text".into()))?;
    let descr = dict_value(text, "descr").ok_or_else(|| bad("the header has no 'descr'".into()))?;
    let dtype = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        other => {
            return Err(bad(format!(
                "dtype {other} is not supported: save float32 or float16 (little-endian), e.g. array.astype('float32')"
            )));
        }
    };
    match dict_value(text, "fortran_order") {
        Some("False") => {}
        Some(_) => {
            return Err(bad(
                "the array is in Fortran order: save it C-contiguous (numpy.ascontiguousarray)"
                    .into(),
            ));
        }
        None => return Err(bad("the header has no 'fortran_order'".into())),
    }
    let shape_text =
        dict_value(text, "shape").ok_or_else(|| bad("the header has no 'shape'".into()))?;
    let shape = shape_text
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad shape {shape_text}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let header = Header {
        dtype,
        shape,
        data_offset: end,
    };
    let need = checked_product(&header.shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .and_then(|n| n.checked_add(end))
        .ok_or_else(|| bad(format!("shape {shape_text} is too large")))?;
    match file_len.cmp(&(need as u64)) {
        std::cmp::Ordering::Less => Err(bad(format!(
            "truncated: shape {shape_text} needs {need} bytes, the file has {file_len}"
        ))),
        // Bytes after the data mean that the header does not describe the
        // file: reading it anyway would misread every value.
        std::cmp::Ordering::Greater => Err(bad(format!(
            "longer than its header says: shape {shape_text} needs {need} bytes, the file has {file_len}"
        ))),
        std::cmp::Ordering::Equal => Ok(header),
    }
}

/// The text of `key`'s value in a Python dict literal: up to the next
/// top-level comma or the closing brace.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = &text[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    None
}

/// Element `i` of the data as f32.
#[inline]
pub fn value(data: &[u8], dtype: DType, i: usize) -> f32 {
    match dtype {
        DType::F32 => {
            let b = &data[4 * i..4 * i + 4];
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
        DType::F16 => half::f16::from_le_bytes([data[2 * i], data[2 * i + 1]]).to_f32(),
    }
}

/// An `.npy` file (version 1.0) of `shape` with elements of NumPy type
/// `descr` given as little-endian bytes.
fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad with spaces so that the data starts on a 64-byte boundary.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A float32 array as `.npy` bytes; `values.len()` must be the product of
/// `shape`.
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<f4", shape, &data)
}

/// A float16 array as `.npy` bytes, from f32 values rounded to nearest.
pub fn encode_f16(shape: &[usize], values: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let data: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    encode("<f2", shape, &data)
}

/// An int64 array as `.npy` bytes.
pub fn encode_i64(shape: &[usize], values: &[i64]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode("<i8", shape, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of a whole file in memory.
    fn parse(path: &Path, bytes: &[u8]) -> Result<Header, String> {
        parse_header(path, bytes, bytes.len() as u64)
    }

    #[test]
    fn written_arrays_parse_back_with_aligned_data() {
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = encode_f32(&[2, 3, 4], &values);
        let path = Path::new("a.npy");
        let h = parse(path, &bytes).unwrap();
        assert_eq!(h.shape, [2, 3, 4]);
        assert_eq!(h.dtype, DType::F32);
        assert_eq!(h.data_offset % 64, 0);
        let data = &bytes[h.data_offset..];
        let back: Vec<f32> = (0..24).map(|i| value(data, h.dtype, i)).collect();
        assert_eq!(back, values);
        let one = encode_f32(&[5], &[1.0; 5]);
        assert_eq!(parse(path, &one).unwrap().shape, [5]);
        let ints = encode_i64(&[2, 2], &[1, -1, 7, 0]);
        let text = String::from_utf8_lossy(&ints[10..]);
        assert!(text.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }"));
    }

    /// A header as NumPy 1.x and 2.x write it, hand-made.
    fn numpy_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        let unpadded = 10 + h.len() + 1;
        h.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn float16_is_read_and_bad_files_are_named_with_the_reason() {
        let path = Path::new("layer4.npy");
        let bytes = encode_f16(&[3], &[1.5, -2.0, 0.25]);
        let h = parse(path, &bytes).unwrap();
        assert_eq!(h.dtype, DType::F16);
        let data = &bytes[h.data_offset..];
        assert_eq!(
            (0..3).map(|i| value(data, h.dtype, i)).collect::<Vec<_>>(),
            [1.5, -2.0, 0.25]
        );

        let err = |header: &str, data: &[u8]| parse(path, &numpy_file(header, data)).unwrap_err();
        let e = err(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8],
        );
        assert!(
            e.starts_with("layer4.npy: dtype <f8") && e.contains("float32"),
            "{e}"
        );
        let e = err(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            &[0; 16],
        );
        assert!(e.contains("Fortran order"), "{e}");
        let e = err(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
            &[0; 12],
        );
        assert!(e.contains("truncated") && e.contains("the file has"), "{e}");
        let e = err(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
            &[0; 20],
        );
        assert!(
            e.starts_with("layer4.npy: longer than its header says")
                && e.contains("needs 144 bytes, the file has 148"),
            "{e}"
        );
        // Shapes whose byte count overflows are refused, not wrapped.
        for shape in [
            "(40, 4611686018427387904, 4611686018427387904, 7)",
            "(3, 18446744073709551615, 2)",
        ] {
            let e = err(
                &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
                &[0; 16],
            );
            assert!(e.contains("is too large"), "{e}");
        }
        let e = parse(path, b"PK\x03\x04 not numpy").unwrap_err();
        assert!(e.contains("not a .npy file"), "{e}");
    }
}
