//! Devices by name, as PyTorch spells them.

use tch::{Cuda, Device};

use crate::error::{Error, Result};

/// `cpu`, `cuda` or `cuda:N`; CUDA only where libtorch sees that device.
pub fn parse_device(name: &str) -> Result<Device> {
    let cuda_index = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => i,
            None => return Err(Error::config(format!("unknown device `{name}` (expected cpu, cuda or cuda:N)"))),
        },
    };
    let count = Cuda::device_count();
    if count == 0 {
        return Err(Error::config(format!("device `{name}` asked for, but libtorch sees no CUDA device here")));
    }
    if cuda_index as i64 >= count {
        return Err(Error::config(format!("device `{name}` asked for, but libtorch sees only {count} CUDA device(s)")));
    }
    Ok(Device::Cuda(cuda_index))
}
