//! Checkpoints: a model's parameters, the optimizer's moments and the step they were taken
//! at, as one safetensors blob without metadata (so its bytes depend on the values alone).
//! Resuming from one continues bit for bit.

use crate::optim::AdamW;
use crate::params::Params;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

/// A checkpoint: params, optimizer moments and the step they were taken at.
pub(crate) fn checkpoint_bytes(params: &Params, opt: &AdamW, step: usize) -> Result<Vec<u8>> {
    let mut all = crate::params::tensors_from_safetensors(&params.to_safetensors()?)?
        .into_iter()
        .map(|(k, v)| (format!("param.{k}"), v))
        .collect::<BTreeMap<_, _>>();
    for (k, v) in crate::params::tensors_from_safetensors(&opt.state_safetensors()?)? {
        all.insert(format!("opt.{k}"), v);
    }
    all.insert(
        "step".into(),
        Tensor::new(&[step as u32, opt.step as u32], &Device::Cpu)?,
    );
    crate::params::tensors_to_safetensors(all)
}

pub(crate) fn load_checkpoint(bytes: &[u8], params: &Params, opt: &mut AdamW) -> Result<usize> {
    let all = crate::params::tensors_from_safetensors(bytes)?;
    let pick = |prefix: &str| -> BTreeMap<String, Tensor> {
        all.iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    };
    params.load_safetensors(&crate::params::tensors_to_safetensors(pick("param."))?)?;
    let steps = all
        .get("step")
        .ok_or_else(|| Error::Data("checkpoint has no step".into()))?
        .to_vec1::<u32>()?;
    opt.load_state(
        &crate::params::tensors_to_safetensors(pick("opt."))?,
        steps[1] as u64,
    )?;
    Ok(steps[0] as usize)
}
