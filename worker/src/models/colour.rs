//! Colour conversion of model output on its device: RGB in `[0, 1]` to 8-bit YUV 4:2:0,
//! so only 1.5 bytes per pixel cross back to the host (a float RGB frame is 12).
//!
//! The matrix is the one the input frames were tagged with (BT.709 for most HD video,
//! BT.601 otherwise), the same one used to turn them into RGB, so colours survive the
//! round trip and the output's copied tags stay true.

/// The YUV matrix of a video, limited (TV) range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// ITU-R BT.601 (SD, and FFmpeg's default for untagged video).
    Bt601,
    /// ITU-R BT.709 (HD).
    Bt709,
}

impl Matrix {
    /// `(kr, kb)`: the luma weights of red and blue.
    fn weights(self) -> (f64, f64) {
        match self {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
        }
    }

    /// Rows `[r, g, b]` giving Y, Cb and Cr in 8-bit limited range from RGB in `[0, 1]`
    /// (offsets 16, 128, 128 added separately).
    fn rows(self) -> [[f64; 3]; 3] {
        let (kr, kb) = self.weights();
        let kg = 1.0 - kr - kb;
        let (luma, chroma) = (219.0, 224.0);
        [
            [kr * luma, kg * luma, kb * luma],
            [
                -kr / (2.0 * (1.0 - kb)) * chroma,
                -kg / (2.0 * (1.0 - kb)) * chroma,
                0.5 * chroma,
            ],
            [
                0.5 * chroma,
                -kg / (2.0 * (1.0 - kr)) * chroma,
                -kb / (2.0 * (1.0 - kr)) * chroma,
            ],
        ]
    }
}

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

/// Converts an `N x 3 x H x W` RGB batch in `[0, 1]` to 8-bit limited-range YUV 4:2:0 with
/// `matrix`, on its device (cropping to even dimensions), and copies the planes to the host
/// in one transfer (through pinned memory from a GPU): one wait for the device per batch.
pub fn rgb_to_yuv420(rgb: &Tensor, matrix: Matrix) -> Result<Planes, tch::TchError> {
    let size = rgb.size();
    let (height, width) = (size[2] & !1, size[3] & !1);
    let rgb = rgb
        .f_narrow(2, 0, height)?
        .f_narrow(3, 0, width)?
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?;
    let channel = |i: i64| rgb.f_narrow(1, i, 1);
    let (r, g, b) = (channel(0)?, channel(1)?, channel(2)?);
    let mix = |row: [f64; 3], offset: f64| -> Result<Tensor, tch::TchError> {
        r.f_mul_scalar(row[0])?
            .f_add(&g.f_mul_scalar(row[1])?)?
            .f_add(&b.f_mul_scalar(row[2])?)?
            .f_add_scalar(offset)
    };
    let [y_row, u_row, v_row] = matrix.rows();
    let y = mix(y_row, 16.0)?;
    let u = mix(u_row, 128.0)?;
    let v = mix(v_row, 128.0)?;
    let subsample =
        |plane: Tensor| plane.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
    let quantised = |plane: Tensor| -> Result<Tensor, tch::TchError> {
        plane
            .f_round()?
            .f_clamp(0.0, 255.0)?
            .f_to_kind(Kind::Uint8)?
            .f_flatten(0, -1)
    };
    let planes = [
        quantised(y)?,
        quantised(subsample(u)?)?,
        quantised(subsample(v)?)?,
    ];
    let mut bytes = host_bytes(&Tensor::f_cat(&planes, 0)?)?;
    let (luma, chroma) = (planes[0].numel(), planes[1].numel());
    let v = bytes.split_off(luma + chroma);
    let u = bytes.split_off(luma);
    let (width, height) = (width as usize, height as usize);
    Ok(Planes {
        width,
        height,
        y: bytes,
        u,
        v,
    })
}

/// A flat `uint8` tensor's bytes on the host; from a GPU, copied into pinned memory first,
/// which the device writes at full bus speed.
fn host_bytes(flat: &Tensor) -> Result<Vec<u8>, tch::TchError> {
    let count = flat.numel();
    let host = if flat.device().is_cuda() {
        let mut pinned = Tensor::f_empty([count as i64], (Kind::Uint8, Device::Cpu))?
            .f_pin_memory(flat.device())?;
        pinned.f_copy_(flat)?;
        pinned
    } else {
        flat.f_contiguous()?
    };
    let mut out = vec![0u8; count];
    host.f_copy_data_u8(&mut out, count)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_match_the_standard_tables() {
        let bt601 = Matrix::Bt601.rows();
        assert!((bt601[0][0] - 65.481).abs() < 1e-3 && (bt601[2][1] + 93.786).abs() < 1e-3);
        let bt709 = Matrix::Bt709.rows();
        assert!((bt709[0][1] - 156.629).abs() < 1e-3 && (bt709[1][0] + 25.664).abs() < 1e-3);
    }

    #[test]
    fn white_grey_and_red_convert_to_their_known_values() {
        let pixel = |r: f32, g: f32, b: f32| {
            Tensor::from_slice(&[r, r, r, r, g, g, g, g, b, b, b, b]).view([1, 3, 2, 2])
        };
        let white = rgb_to_yuv420(&pixel(1.0, 1.0, 1.0), Matrix::Bt709).expect("converts");
        assert_eq!((white.y[0], white.u[0], white.v[0]), (235, 128, 128));
        let grey = rgb_to_yuv420(&pixel(0.5, 0.5, 0.5), Matrix::Bt601).expect("converts");
        assert_eq!((grey.y[0], grey.u[0], grey.v[0]), (126, 128, 128));
        let red = rgb_to_yuv420(&pixel(1.0, 0.0, 0.0), Matrix::Bt709).expect("converts");
        assert_eq!((red.y[0], red.u[0], red.v[0]), (63, 102, 240));
    }
}
