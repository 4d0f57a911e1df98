//! The Real-ESRGAN networks on libtorch (`tch`): SRVGGNetCompact and RRDBNet, built from
//! ncnn weights, plus user TorchScript modules. Inputs and outputs are `N x 3 x H x W`
//! float tensors with RGB values in `[0, 1]`.
//!
//! The layer order of the ncnn `.param` is the order of the weights in the `.bin`, so each
//! network is assembled by walking the layers once; shapes are checked against the file.

use std::path::Path;

use tch::{CModule, Device, Kind, TchError, Tensor};

use super::ncnn::{self, ConvWeights, Layer, WeightReader};
use framefleet_common::storage::LocalFiles;

use super::{Architecture, ModelError, ModelInfo};

/// Slope of the LeakyReLU activations of RRDBNet (ncnn activation type 2).
const LEAKY_SLOPE: f64 = 0.2;

/// Residual scaling inside RRDBNet's dense blocks.
const RESIDUAL_SCALE: f64 = 0.2;

/// A 3x3 (or 1x1) convolution with same padding.
struct Conv {
    weight: Tensor,
    bias: Tensor,
    padding: i64,
    leaky: bool,
}

impl Conv {
    fn new(
        layer: &Layer,
        weights: ConvWeights,
        device: Device,
        kind: Kind,
    ) -> Result<Self, TchError> {
        let shape = [
            weights.out_channels,
            weights.in_channels,
            weights.kernel,
            weights.kernel,
        ];
        Ok(Self {
            weight: Tensor::f_from_slice(&weights.weight)?
                .f_reshape(shape)?
                .f_to_device(device)?
                .f_to_kind(kind)?,
            bias: Tensor::f_from_slice(&weights.bias)?
                .f_to_device(device)?
                .f_to_kind(kind)?,
            padding: weights.kernel / 2,
            leaky: layer.int(9, 0) == 2,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let p = self.padding;
        let y = x.f_conv2d(&self.weight, Some(&self.bias), [1, 1], [p, p], [1, 1], 1)?;
        if self.leaky {
            leaky(&y)
        } else {
            Ok(y)
        }
    }
}

fn leaky(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_maximum(&x.f_mul_scalar(LEAKY_SLOPE)?)
}

/// SRVGGNetCompact: conv + PReLU, N x (conv + PReLU), conv to `3 * s^2` channels, pixel
/// shuffle by `s`, plus the input upsampled by `s` (nearest). The x2 and x3 models of
/// animevideov3 are the x4 network followed by a bicubic downscale.
struct Compact {
    body: Vec<(Conv, Option<Tensor>)>,
    shuffle: i64,
    rescale: Option<f64>,
}

/// RRDBNet: conv, 23 (or 6) residual-in-residual dense blocks, conv, two nearest x2
/// upsamplings each with a conv, then two convs.
struct Rrdb {
    first: Conv,
    blocks: Vec<[[Conv; 5]; 3]>,
    body: Conv,
    up: [Conv; 2],
    high: Conv,
    last: Conv,
}

/// A loaded network, ready to run.
pub enum Network {
    /// SRVGGNetCompact.
    Compact(Box<CompactNetwork>),
    /// RRDBNet.
    Rrdb(Box<RrdbNetwork>),
    /// A TorchScript module (`torch.jit.trace` / `script`).
    Script(CModule),
}

/// Opaque SRVGGNetCompact weights.
pub struct CompactNetwork(Compact);

/// Opaque RRDBNet weights.
pub struct RrdbNetwork(Rrdb);

impl Network {
    /// Loads a catalog model from its ncnn files onto `device`, in `kind` (`Float`, or
    /// `Half` on CUDA).
    pub fn from_ncnn(
        info: &ModelInfo,
        param: &Path,
        bin: &Path,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ModelError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let text = String::from_utf8_lossy(&read(param)?).into_owned();
        let layers = ncnn::parse_param(&text)?;
        let data = read(bin)?;
        let mut weights = WeightReader::new(&data);
        let network = match info.architecture {
            Architecture::Compact => Network::Compact(Box::new(CompactNetwork(compact(
                &layers,
                &mut weights,
                device,
                kind,
            )?))),
            Architecture::Rrdb => Network::Rrdb(Box::new(RrdbNetwork(rrdb(
                &layers,
                &mut weights,
                device,
                kind,
            )?))),
        };
        if !weights.at_end() {
            return Err(ncnn::NcnnError::Bin(format!(
                "{} has weights the network does not use",
                bin.display()
            ))
            .into());
        }
        Ok(network)
    }

    /// Loads a TorchScript module onto `device`, read from the file opened beneath the
    /// storage roots `files` (so a path swapped for a link out of them is not read).
    pub fn from_torchscript(
        path: &Path,
        files: &LocalFiles,
        device: Device,
    ) -> Result<Self, ModelError> {
        let unloadable = |reason: String| ModelError::TorchScript {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = files.open(path).map_err(|e| unloadable(e.to_string()))?;
        let mut module = CModule::load_data_on_device(&mut file, device)
            .map_err(|e| unloadable(super::torch_message(&e)))?;
        module.f_set_eval()?;
        Ok(Network::Script(module))
    }

    /// The element type its inputs must have: the type the weights were loaded in for a
    /// catalog network (half on CUDA), and for a TorchScript module the type of its
    /// floating-point parameters (float for a module exported as usual, on CUDA too),
    /// float when it has none.
    pub fn input_kind(&self) -> Kind {
        match self {
            Network::Compact(net) => net
                .0
                .body
                .first()
                .map_or(Kind::Float, |(c, _)| c.weight.kind()),
            Network::Rrdb(net) => net.0.first.weight.kind(),
            Network::Script(module) => {
                parameter_kind(&module.named_parameters().unwrap_or_default())
            }
        }
    }

    /// Output size over input size, when the network has a fixed integer one (catalog
    /// models); `None` for TorchScript modules.
    pub fn scale(&self) -> Option<i64> {
        match self {
            Network::Compact(net) => {
                let scale = net.0.shuffle as f64 * net.0.rescale.unwrap_or(1.0);
                Some(scale.round() as i64)
            }
            Network::Rrdb(_) => Some(4),
            Network::Script(_) => None,
        }
    }

    /// Device memory one input pixel takes while the network runs, roughly: the feature
    /// maps alive at once (SRVGGNetCompact: its 64-channel maps in and out of a conv and
    /// the shuffled output; RRDBNet: a dense block's 192 channels, and its 64-channel
    /// upsampling convs at 2x and 4x the pixels), in the element type it runs in. `None`
    /// for a TorchScript module, whose insides are unknown. It sizes a first batch; a
    /// batch that still runs out of memory is halved.
    pub fn bytes_per_input_pixel(&self) -> Option<u64> {
        let element = match self.input_kind() {
            Kind::Half => 2,
            _ => 4,
        };
        let channels = match self {
            Network::Compact(net) => 3 * 64 + 2 * 3 * (net.0.shuffle * net.0.shuffle) as u64,
            Network::Rrdb(_) => 3 * 192 + 2 * 64 * (4 + 16),
            Network::Script(_) => return None,
        };
        Some(channels * element)
    }

    /// Runs the network on a batch, in tiles of at most `tile` pixels a side (each run with
    /// `pad` pixels of context around it, cropped away afterwards) when the frames are
    /// larger than that, so big frames fit in memory. `tile = 0`, or a network without a
    /// fixed scale, runs whole frames.
    pub fn forward_tiled(&self, x: &Tensor, tile: i64, pad: i64) -> Result<Tensor, TchError> {
        let size = x.size();
        let (height, width) = (size[2], size[3]);
        let Some(scale) = self.scale() else {
            return self.forward(x);
        };
        if tile <= 0 || (height <= tile && width <= tile) {
            return self.forward(x);
        }
        let _guard = tch::no_grad_guard();
        let out = Tensor::f_zeros(
            [size[0], 3, height * scale, width * scale],
            (x.kind(), x.device()),
        )?;
        for top in (0..height).step_by(tile as usize) {
            for left in (0..width).step_by(tile as usize) {
                let (bottom, right) = ((top + tile).min(height), (left + tile).min(width));
                let (y0, x0) = ((top - pad).max(0), (left - pad).max(0));
                let (y1, x1) = ((bottom + pad).min(height), (right + pad).min(width));
                let piece = x.f_narrow(2, y0, y1 - y0)?.f_narrow(3, x0, x1 - x0)?;
                let result = self.forward(&piece)?;
                let crop = result
                    .f_narrow(2, (top - y0) * scale, (bottom - top) * scale)?
                    .f_narrow(3, (left - x0) * scale, (right - left) * scale)?;
                out.f_narrow(2, top * scale, (bottom - top) * scale)?
                    .f_narrow(3, left * scale, (right - left) * scale)?
                    .f_copy_(&crop)?;
            }
        }
        Ok(out)
    }

    /// Runs the network on a batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        match self {
            Network::Compact(net) => net.0.forward(x),
            Network::Rrdb(net) => net.0.forward(x),
            Network::Script(module) => module.forward_ts(&[x]),
        }
    }
}

fn compact(
    layers: &[Layer],
    weights: &mut WeightReader<'_>,
    device: Device,
    kind: Kind,
) -> Result<Compact, ModelError> {
    let mut body: Vec<(Conv, Option<Tensor>)> = Vec::new();
    let mut shuffle = 0;
    let mut rescale = None;
    for layer in layers {
        match layer.kind.as_str() {
            "Convolution" => {
                let w = weights.convolution(layer)?;
                body.push((Conv::new(layer, w, device, kind)?, None));
            }
            "PReLU" => {
                let slopes = weights.prelu(layer)?;
                let tensor = Tensor::f_from_slice(&slopes)?
                    .f_to_device(device)?
                    .f_to_kind(kind)?;
                match body.last_mut() {
                    Some((_, slot @ None)) => *slot = Some(tensor),
                    _ => return Err(shape_error(layer, "a PReLU must follow a convolution")),
                }
            }
            "PixelShuffle" => shuffle = layer.int(0, 1),
            "Interp" if layer.outputs.iter().any(|o| o == "output") => {
                rescale = Some(f64::from(layer.param(1, 1.0)));
            }
            _ => {}
        }
    }
    if body.len() < 2 || shuffle < 1 {
        return Err(ncnn::NcnnError::Bin("not an SRVGGNetCompact model".into()).into());
    }
    Ok(Compact {
        body,
        shuffle,
        rescale,
    })
}

fn rrdb(
    layers: &[Layer],
    weights: &mut WeightReader<'_>,
    device: Device,
    kind: Kind,
) -> Result<Rrdb, ModelError> {
    let mut convs = Vec::new();
    for layer in layers.iter().filter(|l| l.kind == "Convolution") {
        let w = weights.convolution(layer)?;
        convs.push(Conv::new(layer, w, device, kind)?);
    }
    let count = convs.len();
    if count < 6 || (count - 6) % 15 != 0 {
        return Err(ncnn::NcnnError::Bin(format!("{count} convolutions is not an RRDBNet")).into());
    }
    let mut convs = convs.into_iter();
    let mut next = || {
        convs
            .next()
            .ok_or_else(|| ncnn::NcnnError::Bin("missing convolution".into()))
    };
    let first = next()?;
    let mut blocks = Vec::with_capacity((count - 6) / 15);
    for _ in 0..(count - 6) / 15 {
        let mut dense = || -> Result<[Conv; 5], ncnn::NcnnError> {
            Ok([next()?, next()?, next()?, next()?, next()?])
        };
        blocks.push([dense()?, dense()?, dense()?]);
    }
    Ok(Rrdb {
        first,
        blocks,
        body: next()?,
        up: [next()?, next()?],
        high: next()?,
        last: next()?,
    })
}

/// The type of the first floating-point parameter, float when there is none.
fn parameter_kind(parameters: &[(String, Tensor)]) -> Kind {
    parameters
        .iter()
        .map(|(_, tensor)| tensor.kind())
        .find(|kind| {
            matches!(
                kind,
                Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
            )
        })
        .unwrap_or(Kind::Float)
}

fn shape_error(layer: &Layer, reason: &str) -> ModelError {
    ncnn::NcnnError::Bin(format!("{}: {reason}", layer.name)).into()
}

impl Compact {
    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let mut out = x.shallow_clone();
        for (conv, prelu) in &self.body {
            out = conv.forward(&out)?;
            if let Some(slopes) = prelu {
                out = out.f_prelu(slopes)?;
            }
        }
        let out = out.f_pixel_shuffle(self.shuffle)?;
        let (h, w) = (x.size()[2], x.size()[3]);
        let s = self.shuffle;
        let base = x.f_upsample_nearest2d([h * s, w * s], s as f64, s as f64)?;
        let out = out.f_add(&base)?;
        match self.rescale {
            Some(scale) => {
                let size = [
                    (((h * s) as f64) * scale).round() as i64,
                    (((w * s) as f64) * scale).round() as i64,
                ];
                out.f_upsample_bicubic2d(size, false, scale, scale)
            }
            None => Ok(out),
        }
    }
}

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let feat = self.first.forward(x)?;
        let mut body = feat.shallow_clone();
        for block in &self.blocks {
            let mut inner = body.shallow_clone();
            for dense in block {
                inner = dense_block(dense, &inner)?;
            }
            body = inner.f_mul_scalar(RESIDUAL_SCALE)?.f_add(&body)?;
        }
        let mut feat = feat.f_add(&self.body.forward(&body)?)?;
        for up in &self.up {
            let (h, w) = (feat.size()[2], feat.size()[3]);
            feat = up.forward(&feat.f_upsample_nearest2d([h * 2, w * 2], 2.0, 2.0)?)?;
        }
        self.last.forward(&self.high.forward(&feat)?)
    }
}

fn dense_block(convs: &[Conv; 5], x: &Tensor) -> Result<Tensor, TchError> {
    let mut features = vec![x.shallow_clone()];
    for conv in &convs[..4] {
        let next = conv.forward(&Tensor::f_cat(&features, 1)?)?;
        features.push(next);
    }
    let last = convs[4].forward(&Tensor::f_cat(&features, 1)?)?;
    last.f_mul_scalar(RESIDUAL_SCALE)?.f_add(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_takes_inputs_of_its_floating_point_parameters() {
        let tensor = |kind: Kind| Tensor::zeros([1], (kind, Device::Cpu));
        let named = |kinds: &[Kind]| -> Vec<(String, Tensor)> {
            kinds
                .iter()
                .map(|&k| (format!("{k:?}"), tensor(k)))
                .collect()
        };
        assert_eq!(parameter_kind(&named(&[])), Kind::Float);
        assert_eq!(parameter_kind(&named(&[Kind::Float])), Kind::Float);
        assert_eq!(
            parameter_kind(&named(&[Kind::Int64, Kind::Half])),
            Kind::Half
        );
    }
}
