//! How much memory is free on a CUDA device now, read from the CUDA runtime that libtorch
//! has already loaded into the process (found by symbol, so nothing of CUDA is linked
//! here and a CPU-only libtorch just answers `None`).

use std::ffi::{c_int, c_void, CStr};

use tch::Device;

/// `cudaSetDevice(int)`.
type SetDevice = unsafe extern "C" fn(c_int) -> c_int;
/// `cudaMemGetInfo(size_t *free, size_t *total)`.
type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;

/// Bytes free on `device` now; `None` on the CPU, or when the CUDA runtime is not loaded
/// or answers with an error.
pub fn free_bytes(device: Device) -> Option<u64> {
    let Device::Cuda(index) = device else {
        return None;
    };
    let set_device = symbol(c"cudaSetDevice")?;
    let mem_get_info = symbol(c"cudaMemGetInfo")?;
    let index = c_int::try_from(index).ok()?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both are the CUDA runtime's own functions, with the signatures of its
    // public API (cudaError_t is an int enum, 0 for success); `free` and `total` are valid
    // out-pointers. Setting the device only picks which one this thread's calls address,
    // which libtorch sets again before each of its own.
    let answered = unsafe {
        let set: SetDevice = std::mem::transmute::<*mut c_void, SetDevice>(set_device);
        let info: MemGetInfo = std::mem::transmute::<*mut c_void, MemGetInfo>(mem_get_info);
        set(index) == 0 && info(&mut free, &mut total) == 0
    };
    answered.then_some(free as u64)
}

/// A function already loaded into the process, by name.
fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: RTLD_DEFAULT searches the libraries already loaded; `name` is a valid C
    // string; a null result means the symbol is not there.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_memory_to_report() {
        assert_eq!(free_bytes(Device::Cpu), None);
        if tch::Cuda::device_count() == 0 {
            // With a CPU-only libtorch, any CUDA runtime present finds no device.
            assert_eq!(free_bytes(Device::Cuda(0)), None);
        }
    }
}
