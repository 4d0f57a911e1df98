//! Colour conversion of model output on its device: RGB in `[0, 1]` to 8-bit YUV 4:2:0,
//! so only 1.5 bytes per pixel cross back to the host (a float RGB frame is 12).

use tch::{Device, Kind, Tensor};

/// YUV 4:2:0 planes of a batch, on the host.
pub struct Planes {
    /// Width of the Y plane (chroma planes are half).
    pub width: usize,
    /// Height of the Y plane.
    pub height: usize,
    /// Luma, `N x height x width`.
    pub y: Vec<u8>,
    /// Blue-difference chroma, `N x height/2 x width/2`.
    pub u: Vec<u8>,
    /// Red-difference chroma.
    pub v: Vec<u8>,
}

/// Converts an `N x 3 x H x W` RGB batch in `[0, 1]` to 8-bit BT.601 limited-range YUV
/// 4:2:0 on its device (cropping to even dimensions) and copies the planes to the host.
pub fn rgb_to_yuv420(rgb: &Tensor) -> Result<Planes, tch::TchError> {
    let size = rgb.size();
    let (height, width) = (size[2] & !1, size[3] & !1);
    let rgb = rgb
        .f_narrow(2, 0, height)?
        .f_narrow(3, 0, width)?
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?;
    let channel = |i: i64| rgb.f_narrow(1, i, 1);
    let (r, g, b) = (channel(0)?, channel(1)?, channel(2)?);
    let mix = |kr: f64, kg: f64, kb: f64, offset: f64| -> Result<Tensor, tch::TchError> {
        r.f_mul_scalar(kr)?
            .f_add(&g.f_mul_scalar(kg)?)?
            .f_add(&b.f_mul_scalar(kb)?)?
            .f_add_scalar(offset)
    };
    let y = mix(65.481, 128.553, 24.966, 16.0)?;
    let u = mix(-37.797, -74.203, 112.0, 128.0)?;
    let v = mix(112.0, -93.786, -18.214, 128.0)?;
    let subsample =
        |plane: Tensor| plane.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
    let to_bytes = |plane: Tensor| -> Result<Vec<u8>, tch::TchError> {
        let bytes = plane
            .f_round()?
            .f_clamp(0.0, 255.0)?
            .f_to_kind(Kind::Uint8)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?;
        let count = bytes.numel();
        let mut out = vec![0u8; count];
        bytes.f_copy_data_u8(&mut out, count)?;
        Ok(out)
    };
    let (width, height) = (width as usize, height as usize);
    Ok(Planes {
        width,
        height,
        y: to_bytes(y)?,
        u: to_bytes(subsample(u)?)?,
        v: to_bytes(subsample(v)?)?,
    })
}
